"""The launcher's side of GPU settings and adaptive gaps (called by llem.launch.supervisor).

The launcher's parent process applies a job's `gpu.*` on the job's slot GPUs just before it starts the
job's process, passes what it did in LLEM_GPU_SETTINGS, and restores when that process has ended —
completed, failed, timed out, interrupted or killed; a record left by a killed launcher is repaired by
the next llem run (llem.gpu.apply.repair_stale). Jobs run in parallel only on disjoint GPU slots, and a GPU
another live llem process holds is refused, so two studies never fight over one GPU's settings.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from llem.gpu import cool as cool_mod
from llem.gpu.apply import (
    APPLIED_ENV,
    Applied,
    GpuSettingsError,
    apply,
    check,
    held_by_others,
    job_gpus,
    request_of,
    restore_applied,
)
from llem.gpu.job import COOL_ENV


def check_plan(gpu_nodes: Sequence[Any], refs: Sequence[str] | None = None) -> None:
    """Planning: every distinct `gpu.*` of the study against every GPU the study may use (constraints,
    supported clocks, permission, other llem runs); raises GpuSettingsError with one line per problem."""
    requests = []
    for node in gpu_nodes:
        req = request_of(node)
        if not req.empty and req not in requests:
            requests.append(req)
    if not requests:
        return
    with job_gpus(refs) as gpus:
        held = held_by_others()
        problems: list[str] = []
        for req in requests:
            problems += [p for p in check(req, gpus, held) if p not in problems]
    if problems:
        raise GpuSettingsError("\n".join(problems))


class GpuKeeper:
    """Per study: the settings applied for running jobs (by Hydra job number) and the adaptive-gap state."""

    def __init__(self, gaps: Any, out: TextIO | None = None) -> None:
        self.gaps = gaps
        self.out = out or sys.stdout
        self.applied: dict[int, Applied] = {}
        self.idle: cool_mod.Reading = {}
        self.cool = cool_mod.Cool.of(getattr(gaps, "cool", None) or {})
        self.adaptive = bool(getattr(gaps, "adaptive", False))
        self._pending_cool: dict[tuple[str, ...], dict[str, Any]] = {}
        self._said_at = -1e9  # when a cooling line was last printed to a non-terminal

    def countdown(self, seconds: float, label: str) -> None:
        """The launcher's wait between jobs: a cooling wait shows temperature and power (a terminal: its line
        rewritten each poll; a log: one line every 30 s), any other gap the usual countdown."""
        from llem.launch.console import countdown

        if not label.startswith(cool_mod.COOLING):
            countdown(seconds, label, self.out)
            return
        if hasattr(self.out, "isatty") and self.out.isatty():
            self.out.write(f"\r[llem] {label} \033[K")
            self.out.flush()
        elif time.monotonic() - self._said_at >= 30.0:
            self._said_at = time.monotonic()
            print(f"[llem] {label}", file=self.out, flush=True)
        time.sleep(max(0.0, seconds))

    # -- adaptive gaps ------------------------------------------------------------------------------
    def study_start(self, slots: Sequence[Sequence[str]]) -> None:
        """The idle reference: every slot's GPUs, before the first job."""
        if not self.adaptive:
            return
        try:
            for slot in slots:
                self.idle.update(cool_mod.read_gpus(list(slot) or None))
        except Exception as e:  # no GPU readings: nothing to wait for
            print(f"llem: warning: study.gaps=adaptive cannot read the GPUs ({e}); no gaps", file=sys.stderr, flush=True)
            self.adaptive = False

    def ready(self, slot: Sequence[str], free_at: float) -> tuple[bool, str]:
        """Adaptive gap before a job on `slot` whose last job ended at `free_at` (time.monotonic): (start now?,
        what the countdown shows)."""
        try:
            now = cool_mod.read_gpus(list(slot) or None)
        except Exception:
            return True, "adaptive gap"
        waited = time.monotonic() - free_at
        hot = cool_mod.too_warm(now, self.idle, self.cool)
        if hot and waited < self.cool.max_s:
            return False, cool_mod.status_text(now, self.idle)
        self._pending_cool[tuple(slot)] = cool_mod.record(waited, now, self.idle, not hot, self.cool)
        return True, "adaptive gap"

    # -- settings -------------------------------------------------------------------------------------
    def before(self, num: int, gpu_node: Any, slot: Sequence[str], owner: str) -> dict[str, str]:
        """Apply job `num`'s settings on its slot's GPUs; the job process's environment additions.
        Raises GpuSettingsError (nothing changed)."""
        env: dict[str, str] = {}
        info = self._pending_cool.pop(tuple(slot), None)
        if info is not None:
            env[COOL_ENV] = json.dumps(info)
        req = request_of(gpu_node)
        if req.empty:
            return env
        applied = apply(req, list(slot) or None, owner)
        self.applied[num] = applied
        env[APPLIED_ENV] = json.dumps(applied.as_dict())
        for w in applied.warnings:
            print(f"llem: warning: {w}", file=sys.stderr, flush=True)
        return env

    def after(self, num: int) -> None:
        """Job `num`'s process has ended (any way): put its GPUs back."""
        applied = self.applied.pop(num, None)
        if applied is None:
            return
        failed = restore_applied(applied)
        if failed:
            print(f"llem: warning: GPU settings of job {num} could not be put back: {'; '.join(failed)}; the next "
                  "llem run retries (or `python -m llem.gpu restore`)", file=sys.stderr, flush=True)

    def restore_all(self) -> None:
        for num in list(self.applied):
            self.after(num)


__all__ = ["GpuKeeper", "GpuSettingsError", "check_plan"]
