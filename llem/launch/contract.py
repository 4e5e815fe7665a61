"""What the process supervisor needs from whoever runs a study: the contract between llem's launcher
and the sweeper (or app) above it, so `llem.launch` never imports `llem.study`.

The launcher runs jobs; it does not know what a study's folder holds. A `StudyHooks` object tells it:

- `ledger(sweep_dir)` → a `Ledger`: where job and study states go (llem's manifest), the folder's lock
  held while the jobs run, and extra environment for every job process (the jobs' shared lock);
- `gaps` → a `Pacing`: seconds to wait before each job (thermal gaps), adaptive or fixed;
- `begin`, `identity`, `finish`: the study's own bookkeeping around one `launch()` call;
- `job_setup`: a picklable callable each job process runs first (e.g. take the jobs' lock);
- `preload`: what the zygote imports (None: torch, transformers and llem's job code).

`StudyHooks` itself is a plain process-per-job launcher's: nothing written, no gaps, the child's own
JobReturn is the truth. llem's study (manifest, lock, gaps, hashes) is `llem.study.hooks.LlemStudyHooks`,
which llem's sweeper hands the launcher with `launcher.attach(hooks)`; under another sweeper the
launcher builds it for llem's own app (docs/launcher.md "Sweeper and launcher").
Pure: no Hydra, no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Protocol


class Pacing(Protocol):
    """Thermal gaps: `adaptive` (wait until the job's GPUs are back near idle, `cool` says how) or
    fixed seconds from `before(prev_cycle, cycle)`."""

    adaptive: bool
    cool: Any

    def before(self, prev_cycle: Optional[int], cycle: int) -> float: ...

    def starts_cycle(self, prev_cycle: Optional[int], cycle: int) -> bool: ...


class NoGaps:
    """No wait between jobs."""

    adaptive = False
    cool = None

    def before(self, prev_cycle: Optional[int], cycle: int) -> float:
        return 0.0

    def starts_cycle(self, prev_cycle: Optional[int], cycle: int) -> bool:
        return prev_cycle is not None and cycle > prev_cycle


class Ledger:
    """Where the supervisor records what happened; the base records nothing."""

    def job_env(self) -> Mapping[str, str]:
        """Extra environment for every job process."""
        return {}

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Held while the jobs run (llem: the study folder's lock; refused → one line, exit 2)."""
        yield

    def mark(self, index: int, status: str, **fields: Any) -> None:
        """Job `index` is now `status` (planned, running, completed, failed, ...)."""

    def study_status(self, status: str, **fields: Any) -> None:
        """The study is now `status` (interrupted, aborted, failed)."""


class StudyHooks:
    """A plain process-per-job launcher's hooks (any Hydra app); llem's study overrides them."""

    study = False  # True: a job's own records (result.json) are the truth, a job that fails to compose fails alone
    preload: Optional[Sequence[str]] = ()  # modules the zygote imports; None = llem's job code (torch & co.)
    gaps: Pacing = NoGaps()
    searching = False  # True: the sweeper calls launch() per batch of trials, the zygote stays for all

    def check(self) -> None:
        """Before any job: raise to refuse the launch (llem: the study's search objective)."""

    def ledger(self, sweep_dir: Path) -> Ledger:
        return Ledger()

    def begin(self, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        """A context manager around one launch() (llem: the folder lock and the manifest's entries)."""
        return contextlib.nullcontext()

    def expand(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               sweep_dir: Path) -> tuple[Sequence[Sequence[str]], int]:
        """The jobs to run for the sweeper's batch (llem: one per cycle of each search trial)."""
        return job_overrides, initial_job_idx

    def collapse(self, returns: list[Any]) -> list[Any]:
        """Back to one JobReturn per job the sweeper asked for."""
        return returns

    def identity(self, num: int, overrides: Sequence[str], sweep_config: Any) -> dict[str, Any]:
        """Job `num`'s index, cycle, config_hash and study_design_hash (llem: from the sweeper's tag)."""
        return {"index": num, "cycle": 0, "config_hash": None, "study_design_hash": None}

    def label(self, overrides: Sequence[str]) -> str:
        """The job's progress label."""
        return " ".join(overrides) or "(defaults)"

    def finish(self, sweep_dir: Path, finished: list[Any]) -> None:
        """After the jobs (llem: failed entries, the study's status, a failure summary)."""

    job_setup: Optional[Callable[[], Any]] = None  # run first in each job process (picklable)
