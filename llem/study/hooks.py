"""llem's study as seen by the launcher (the `llem.launch.contract.StudyHooks` contract): the folder's
lock, the manifest, thermal gaps, config hashes and the sweeper's per-job tag. llem's sweeper hands an
instance to llem's launcher (`launcher.attach(...)`); under another sweeper (basic, Optuna) the launcher
makes one for llem's app (`for_config`), which then also writes the manifest itself.

Here, not in `llem.launch`: the process supervisor knows nothing of studies. Hydra and OmegaConf are
imported inside the functions that read a composed config.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from llem import io
from llem.launch.contract import Ledger, StudyHooks
from llem.study import lock, manifest
from llem.study.gaps import Gaps


def is_llem_app(config: Mapping[str, Any]) -> bool:
    """A config composed from llem's schema (it has the study and study_job nodes); any other Hydra
    app gets a plain process-per-job launcher: no gaps, no study settings, no llem files."""
    return "study" in config and "study_job" in config


class ManifestLedger(Ledger):
    """The supervisor's records in the study folder: manifest entries, the folder lock, the jobs' lock."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = Path(sweep_dir)

    def job_env(self) -> Mapping[str, str]:
        return {lock.JOBS_LOCK_ENV: str(self.sweep_dir.absolute() / lock.JOBS_LOCK_FILE)}

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        try:
            folder = lock.acquire(self.sweep_dir)  # one running study per folder (a no-op under llem's sweeper)
        except (lock.FolderInUse, io.StorageError) as e:
            print(f"llem: {e}", file=sys.stderr, flush=True)
            if isinstance(e, io.StorageError):
                raise io.StorageExit(str(e), e.reason) from None
            raise SystemExit(2) from None
        try:
            yield
        finally:
            lock.release(folder)

    def mark(self, index: int, status: str, **fields: Any) -> None:
        try:
            manifest.set_status(self.sweep_dir, index, status, **fields)
        except (KeyError, FileNotFoundError):
            manifest.ensure_jobs(self.sweep_dir, [{"index": index, "status": status, **fields}])

    def study_status(self, status: str, **fields: Any) -> None:
        manifest.set_study_status(self.sweep_dir, status, **fields)


class LlemStudyHooks(StudyHooks):
    """llem's app: result.json is the truth; gaps, manifest, lock, hashes. `by_sweeper`: llem's sweeper
    wrote the manifest and plan, resolved the gaps and prints the failure summary itself."""

    study = True
    preload = None  # torch, transformers, llem's job code

    def __init__(self, config: Any, gaps: Optional[Gaps] = None, by_sweeper: bool = False) -> None:
        self.config = config
        self.by_sweeper = by_sweeper
        self._gaps = gaps
        self._search: Any = None
        self._search_offset: Optional[int] = None
        self._noted = False
        self._created = False

    @property
    def gaps(self) -> Any:  # type: ignore[override]
        if self._gaps is None:
            from llem.study.gaps import gpu_host, resolve_gaps

            study = self.config.study
            self._gaps = resolve_gaps(study, gpu_host() if study.get("gaps", False) else False)
        return self._gaps

    @property
    def job_setup(self) -> Any:  # type: ignore[override]
        return lock.hold_as_job  # the sweep folder stays taken while the job lives

    def ledger(self, sweep_dir: Path) -> Ledger:
        return ManifestLedger(sweep_dir)

    # -- a search (study.objective) under a sweeper not llem's: one job per cycle of each trial ----------
    def check(self) -> None:
        if self.by_sweeper:
            return
        from llem.config.validate import ConfigError
        from llem.search.launching import SearchRun, launcher_kind, support_line, sweeper_kind
        from llem.study.exits import exit_or_raise

        if not self._noted and sweeper_kind(self.config) != "llem":
            self._noted = True
            line = support_line(sweeper_kind(self.config), launcher_kind(self.config))
            if line:
                print(f"llem: {line}", file=sys.stderr, flush=True)
        try:
            self._search = SearchRun.of(self.config)
        except ConfigError as e:
            exit_or_raise(e)

    def expand(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               sweep_dir: Path) -> tuple[Sequence[Sequence[str]], int]:
        if self._search is None:
            return job_overrides, initial_job_idx
        from llem.search.launching import next_free_index

        if self._search_offset is None:  # jobs of an earlier search in this folder are kept
            self._search_offset = next_free_index(sweep_dir)
        job_overrides, initial_job_idx = self._search.expand(job_overrides, initial_job_idx)
        return job_overrides, initial_job_idx + self._search_offset

    @property
    def searching(self) -> bool:
        return self._search is not None

    def collapse(self, returns: list[Any]) -> list[Any]:
        return self._search.collapse(returns) if self._search is not None else returns

    # -- one launch() -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def begin(self, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Iterator[None]:
        """The folder is this study's before its manifest is touched (llem.study.lock)."""
        from llem.study.exits import exit_or_raise

        with lock.hold(sweep_dir, on_refused=exit_or_raise):
            self._created = self._manifest(sweep_dir, job_overrides, initial_job_idx)
            yield

    def _manifest(self, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> bool:
        """The manifest llem's sweeper writes, made here when another sweeper (e.g. basic) runs llem's app."""
        from llem.study.jobtag import study_job_of, user_overrides

        found = manifest.load(sweep_dir)
        known = {j.get("index") for j in (found or {}).get("jobs", [])}
        entries = []
        for i, overrides in enumerate(job_overrides):
            sj = study_job_of(overrides)
            index = sj.get("index")
            entries.append({"index": int(index) if index is not None else initial_job_idx + i,
                            "status": "planned", "overrides": user_overrides(overrides),
                            "cycle": int(sj.get("cycle") or 0)})
        entries = [e for e in entries if e["index"] not in known]  # a sweeper launching batch after batch (Optuna)
        if found is None or entries:
            found = manifest.ensure_jobs(sweep_dir, entries, {"status": "running", "sweep_dir": str(sweep_dir),
                                                              "created_by": "llem launcher"})
        return found.get("created_by") == "llem launcher"

    def identity(self, num: int, overrides: Sequence[str], sweep_config: Any) -> dict[str, Any]:
        from llem.study.jobtag import study_job_of

        sj = study_job_of(overrides)
        index = int(sj["index"]) if sj.get("index") is not None else num
        chash = sj.get("config_hash")
        if chash is None and sweep_config is not None:
            from omegaconf import OmegaConf, open_dict, read_write

            from llem.study.hashing import config_hash

            task_cfg = copy.deepcopy(sweep_config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            chash = config_hash(OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True))  # type: ignore[arg-type]
        return {"index": index, "cycle": int(sj.get("cycle") or 0), "config_hash": chash,
                "study_design_hash": sj.get("study_design_hash")}

    def label(self, overrides: Sequence[str]) -> str:
        from llem.study.jobtag import user_overrides

        return " ".join(o for o in user_overrides(list(overrides)) if not o.startswith("study.")) or "(defaults)"

    def finish(self, sweep_dir: Path, finished: list[Any]) -> None:
        from omegaconf import OmegaConf

        from llem.study.hashing import design_hash

        failed = [f for f in finished if f.outcome.status != "completed"]
        for f in failed:
            if f.plan is None:  # never started: the manifest still says planned
                manifest.set_status(sweep_dir, f.index, "failed", error=f.outcome.error)
        if self._created:
            m = manifest.load(sweep_dir) or {}
            hashes = [str(j["config_hash"]) for j in m.get("jobs", []) if j.get("config_hash")]
            manifest.set_study_status(sweep_dir, "failed" if failed else "completed",
                                      study_design_hash=design_hash(hashes) if hashes else None)
        if OmegaConf.select(self.config, "study.objective") is not None:
            from llem.search.launching import record_objectives

            record_objectives(sweep_dir)
        if failed and not self.by_sweeper:  # llem's sweeper prints its own failure summary
            print(f"llem: {len(failed)} of {len(finished)} jobs failed (manifest: {sweep_dir / manifest.MANIFEST_FILE}):",
                  file=sys.stderr)
            for f in failed[:20]:
                err = f.outcome.error or {}
                print(f"  job {f.index}: {f.outcome.status} ({f.outcome.reason}): {err.get('type', '')}: "
                      f"{str(err.get('message', '')).splitlines()[0] if err.get('message') else ''}",
                      file=sys.stderr)


def for_config(config: Any) -> StudyHooks:
    """The hooks for a launch that no sweeper attached hooks to: llem's study for llem's app, else plain."""
    return LlemStudyHooks(config) if is_llem_app(config) else StudyHooks()


