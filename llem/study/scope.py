"""Backend-scoped expansion of a sweep (pure): `pytorch.*` keys vary only pytorch jobs, `vllm.*` only vLLM.

Hydra's BasicSweeper takes the Cartesian product of every key. For llem that is wrong across
backends: `backend=pytorch,vllm pytorch.batch_size=1,8 vllm.max_num_seqs=64,256` would give 8 configs
per backend instead of independent grids (4 + 4 with a 2-value `precision`), and half of them would set a
section the job's backend lacks. Here each backend gets its own grid, and the jobs come out in Hydra's
product order with the other backend's keys removed (first occurrence kept), so a sweep without
backend-scoped keys expands exactly like BasicSweeper.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SweepKey:
    """One override key of the sweep with its values, as Hydra's parser gives them.

    `key` is Hydra's key element (with its `+`/`++`/`~` prefix and `@package`), `path` the dotted key
    or group name, `values` the value strings (one for a plain override).
    """

    key: str
    path: str
    values: tuple[str, ...]

    def line(self, i: int) -> str:
        return f"{self.key}={self.values[i]}"


@dataclass
class Expansion:
    """The configs of a sweep: one override list per config, in launch order, plus what was dropped."""

    configs: list[list[str]]
    notes: list[str] = field(default_factory=list)


def scope_of(path: str, backends: Collection[str]) -> str | None:
    """The backend a key belongs to (`pytorch.batch_size` → pytorch), None for keys of every backend."""
    head = path.split(".", 1)[0]
    return head if head in backends and "." in path else None


def expand(keys: Sequence[SweepKey], backends: Collection[str], current_backend: str | None,
           backend_key: str = "backend") -> Expansion:
    """Configs of the sweep, backend-scoped.

    The job's backend is the `backend=` value of its combination, or `current_backend` (the one the
    composed config uses) when the sweep does not set `backend`. Keys scoped to a backend no job uses
    are dropped with a note.
    """
    keys = list(keys)
    bpos = next((i for i, k in enumerate(keys) if k.path == backend_key and not k.key.startswith("~")), None)
    if bpos is None:
        choices: list[tuple[int | None, str | None]] = [(None, current_backend)]
    else:
        choices = [(i, v) for i, v in enumerate(keys[bpos].values)]
    used = {b for _, b in choices}
    notes = []
    for k in keys:
        owner = scope_of(k.path, backends)
        if owner is not None and owner not in used:
            notes.append(f"{k.key} ignored: no job of this study uses backend={owner}")

    ranked: list[tuple[tuple[int, ...], list[str]]] = []
    for bi, backend in choices:
        # per key: the value indices this backend's grid takes (a foreign key only its first, dropped)
        axes: list[Sequence[int]] = []
        for pos, k in enumerate(keys):
            if pos == bpos:
                axes.append([bi])  # type: ignore[list-item]
            elif (owner := scope_of(k.path, backends)) is not None and owner != backend:
                axes.append([-1])
            else:
                axes.append(range(len(k.values)))
        for combo in itertools.product(*axes):
            rank = tuple(0 if i == -1 else i for i in combo)  # a dropped key sorts as its first value
            ranked.append((rank, [keys[p].line(i) for p, i in enumerate(combo) if i != -1]))
    ranked.sort(key=lambda item: item[0])  # lexicographic = Hydra's itertools.product order
    return Expansion([lines for _, lines in ranked], notes)
