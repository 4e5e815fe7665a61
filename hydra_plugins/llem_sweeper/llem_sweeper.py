"""llem's Hydra sweeper: a sweep becomes a measured study (thin adapter over `llem.study`).

Expands the command line and `hydra.sweeper.params` with Hydra's own parser, scopes backend keys,
composes and validates every config before anything runs, prints and saves the plan, writes the
manifest, then hands the jobs to whatever launcher is configured (llem's, basic, submitit, ...).

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside
sys.modules, where dataclasses cannot resolve string annotations.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.llem_sweeper.compose import FastComposer, sweep_keys
from llem.config.schema import BACKENDS, ExperimentConfig, StudyConfig
from llem.config.validate import ConfigError, problems
from llem.io import atomic_write_json, atomic_write_text, read_json
from llem.result import now_iso
from llem.study import manifest
from llem.study.estimate import load_history
from llem.study.exits import StudyFailed, exit_or_raise
from llem.study.gaps import GPU_CONFIG_GAP_S, GPU_CYCLE_GAP_S, Gaps, gpu_host, resolve_gaps
from llem.study.hooks import LlemStudyHooks, is_llem_app
from llem.study.jobtag import user_overrides
from llem.study.lock import hold
from llem.study.plan import PLAN_TEXT_FILE, Plan, StudyError, build_plan, check_job_count, check_startable
from llem.study.resume import (
    check_design,
    check_fresh_folder,
    completed_keys,
    contiguous_blocks,
    previous_indices,
    saved_design,
)
from llem.study.scope import expand


@dataclass
class LlemSweeperConf:
    _target_: str = "hydra_plugins.llem_sweeper.llem_sweeper.LlemSweeper"
    params: Optional[dict[str, str]] = None  # sweep saved in YAML, like BasicSweeper's params
    # at most this many jobs per launcher.launch() call (as BasicSweeper's); null = all at once
    max_batch_size: Optional[int] = None


NOT_LLEM_APP = ("llem's sweeper (hydra/sweeper=llem) plans studies of llem's own app, and this app has no "
                "`study`/`study_job` config (llem's schema); use hydra/sweeper=basic (with hydra/launcher=llem "
                "for a fresh process per job)")


ConfigStore.instance().store(group="hydra/sweeper", name="llem", node=LlemSweeperConf, provider="llem")


def _study(config: DictConfig) -> StudyConfig:
    study = OmegaConf.to_object(config.study)
    assert isinstance(study, StudyConfig)
    return study


def _gaps(study: StudyConfig, config: DictConfig) -> tuple[Gaps, str]:
    """Resolved gaps and a one-line why; zero where the configured launcher does not wait them."""
    if not study.gaps:
        return Gaps(0.0, 0.0), "off (study.gaps=false)"
    gpu = gpu_host()
    gaps = resolve_gaps(study, gpu)
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if "llem" not in target:
        name = target.rsplit(".", 1)[-1] or "this launcher"
        return Gaps(0.0, 0.0), f"not waited: only llem's launcher waits gaps ({name} dispatches the jobs itself)"
    if gaps.adaptive:
        c = gaps.cool
        return gaps, (f"adaptive: before each job, wait until its GPUs are within {c.temp_c:g} °C and {c.power_w:g} W "
                      f"of idle (at most {c.max_s:g} s; study.cool.*); study.gaps=fixed or false for others")
    if gpu:
        return gaps, (f"GPU host: unset gaps default to {GPU_CONFIG_GAP_S:g} s / {GPU_CYCLE_GAP_S:g} s; "
                      "study.gaps=false turns them off")
    return gaps, "CPU-only host: no gaps unless set; study.gaps=false turns them off"


JOBLIB_NOTE = ("hydra/launcher=joblib: jobs run in joblib's worker processes, hydra.launcher.n_jobs at once, "
               "and a worker runs job after job: no fresh process per job, no gaps, no health checks, no "
               "hydra.launcher.timeout_s (llem's launcher gives these); fine for quick CPU-only sweeps, not for "
               "energy figures you compare")


def _launcher_note(config: DictConfig) -> Optional[str]:
    """What a launcher other than llem's does not give, for the plan."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if "joblib" in target:
        return JOBLIB_NOTE
    if target.endswith("BasicLauncher"):
        return ("hydra/launcher=basic: jobs run inside this process, one after another: no fresh process per "
                "job, no gaps, no health checks, no hydra.launcher.timeout_s")
    return None


class LlemSweeper(Sweeper):
    def __init__(self, params: Optional[dict[str, str]] = None, max_batch_size: Optional[int] = None) -> None:
        self.params = dict(params or {})
        self.max_batch_size = max_batch_size
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None
        self._done_dirs: dict[tuple[str, int], str] = {}  # resume: job folders already completed

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, arguments: list[str], before_compose: Optional[Callable[[], None]] = None) -> Plan:
        """Expand, compose, validate, hash and order every job; nothing is written or launched.
        A study over study.max_jobs is refused from its job count, before any config is composed;
        `before_compose` runs once the study may start (the sweep starts the launcher's zygote there)."""
        assert self.config is not None and self.hydra_context is not None
        config, loader = self.config, self.hydra_context.config_loader
        study = _study(config)
        bad = _study_problems(study)
        if bad:
            raise StudyError("invalid study settings:\n  " + "\n  ".join(bad))
        if self.max_batch_size is not None and (isinstance(self.max_batch_size, bool) or self.max_batch_size < 1):
            raise StudyError(f"hydra.sweeper.max_batch_size={self.max_batch_size} is invalid: allowed an "
                             "integer >= 1, or null (all jobs in one launch)")
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
        expansion = expand(sweep_keys(parsed), BACKENDS, OmegaConf.select(config, "backend"))
        if not study.resume:  # on resume completed jobs do not count: checked on the plan instead
            check_job_count(len(expansion.configs), study)
        if before_compose is not None:
            before_compose()
        composer = FastComposer(loader, config)
        candidates = [composer.candidate(o) for o in expansion.configs]
        if not study.dry_run:  # gpu.* against the GPUs (range, clocks, root), for every config: exit 2 now
            from llem.gpu.launch import GpuSettingsError, check_plan

            try:
                check_plan([c.gpu for c in candidates if not c.problems])
            except GpuSettingsError as e:
                raise StudyError(str(e)) from None
        sweep_dir = Path(config.hydra.sweep.dir)
        history_root = Path(study.history_dir) if study.history_dir else sweep_dir.parent.parent
        gaps, gaps_note = _gaps(study, config)
        history = load_history(history_root, recursive=bool(study.history_dir))

        saved_manifest = manifest.load(sweep_dir)
        check_fresh_folder(saved_manifest is not None, study.resume, str(sweep_dir))
        saved, seen = _read_plan(sweep_dir), manifest.scan_job_dirs(sweep_dir) if study.resume else []
        notes = list(expansion.notes)
        launcher_note = _launcher_note(config)
        if launcher_note:
            notes.append(launcher_note)
        if study.objective is not None:  # llem/search: what the jobs return to Hydra
            from llem.search.launching import objective_note

            notes.append(objective_note(OmegaConf.to_container(config.study).get("objective")))  # type: ignore[union-attr]
        previous: dict[tuple[str, int], int] = {}
        if study.resume:
            previous = previous_indices(saved, saved_manifest, seen)
            if not previous:
                notes.append(f"study.resume=true: nothing to resume in {sweep_dir}, starting fresh")
        plan = build_plan(candidates, study, gaps, gaps_note, history, previous=previous, notes=notes,
                          sweep_dir=str(sweep_dir))
        if study.resume:
            check_design(saved_design(saved, saved_manifest, seen), plan.study_design_hash, str(sweep_dir))
            done = completed_keys(seen, plan.study_design_hash)
            self._done_dirs = {(s["config_hash"], int(s["cycle"])): s["job_dir"] for s in seen
                               if (s["config_hash"], s["cycle"]) in done}
            plan = build_plan(candidates, study, gaps, gaps_note, history, previous=previous, completed=done,
                              notes=notes, sweep_dir=str(sweep_dir))
        plan.notes.append(f"planned {len(candidates)} configs with {composer.composes} Hydra composes")
        return plan

    # -- the study --------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        if not is_llem_app(self.config):
            exit_or_raise(StudyError(NOT_LLEM_APP))
        try:
            with hold(self.config.hydra.sweep.dir, on_refused=exit_or_raise):  # one running study per folder (llem.study.lock)
                return self._sweep(arguments)
        finally:  # the launcher's zygote ends with the study: also on failure and when the caller catches
            close = getattr(self.launcher, "close", None)
            if callable(close):
                close()

    def _check_launcher(self) -> None:
        """llem's launcher settings (hydra.launcher.*), before planning; then the launcher gets this
        study's hooks (llem.launch.contract: manifest, lock, gaps; this sweeper prints the failures)."""
        settings = getattr(self.launcher, "launch_settings", None)
        if callable(settings):
            try:
                found = settings()
                gpus = getattr(found, "gpus_per_job", 0)
                if gpus:  # GPU slots this host cannot give: refused before plan, manifest or summary exist
                    from llem.launch.slots import launcher_slots

                    launcher_slots(gpus)
            except ConfigError as e:
                exit_or_raise(e)
        attach = getattr(self.launcher, "attach", None)
        if callable(attach):
            attach(LlemStudyHooks(self.config, by_sweeper=True))

    def _prestart(self) -> None:
        """Let llem's launcher start its zygote now (its imports overlap planning) and keep it for
        every batch of this study; other launchers have no such hook. Not for a dry run."""
        prestart = getattr(self.launcher, "prestart", None)
        if callable(prestart) and not OmegaConf.select(self.config, "study.dry_run"):
            prestart()

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        t0 = time.perf_counter()
        study = _study(self.config)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        self._check_launcher()
        try:
            plan = self.plan(arguments, before_compose=self._prestart)
        except StudyError as e:
            exit_or_raise(e)
        plan_s = time.perf_counter() - t0
        try:
            check_startable(plan, study)
        except StudyError as e:
            print(plan.render(), flush=True)
            exit_or_raise(e)

        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._save_multirun_yaml(sweep_dir, plan)
        data = plan.as_dict()
        data["planning_s"] = plan_s
        atomic_write_json(sweep_dir / manifest.PLAN_FILE, data)
        atomic_write_text(sweep_dir / PLAN_TEXT_FILE, plan.render(full=True) + "\n")
        print(plan.render() + f"\n  plan saved to {sweep_dir / PLAN_TEXT_FILE} ({plan_s:.2f} s to plan)",
              flush=True)
        if study.dry_run:
            print("llem: study.dry_run=true: nothing launched", flush=True)
            return []

        self._write_manifest(sweep_dir, plan, study)
        launch = plan.to_launch
        by_index = {j.index: j for j in launch}
        returns: list[list[JobReturn]] = []
        launched: dict[int, JobReturn] = {}
        errors: list[BaseException] = []
        try:
            for block in contiguous_blocks([j.index for j in launch]):
                size = self.max_batch_size or len(block)
                for batch_indices in (block[k:k + size] for k in range(0, len(block), size)):
                    batch = [by_index[i].overrides for i in batch_indices]
                    try:
                        rets = list(self.launcher.launch(batch, initial_job_idx=batch_indices[0]))
                    except Exception as e:  # a launcher that raises when jobs failed: go on with the next batch
                        errors.append(e)
                        continue
                    launched.update(zip(batch_indices, rets))
                    returns.append(rets)
        finally:
            failed, summarized = self._finish(sweep_dir, launched)
        if failed:
            print(f"llem: {len(failed)} of {len(launch)} jobs failed (manifest: {sweep_dir / manifest.MANIFEST_FILE})"
                  + ("" if summarized else ":"), file=sys.stderr)
            for job in [] if summarized else failed[:20]:
                err = job.get("error") or {}
                user = user_overrides(job["overrides"])
                print(f"  job {job['index']} ({' '.join(user)}): "
                      f"{err.get('type', 'failed')}: {err.get('message', '')}", file=sys.stderr)
            exit_or_raise(StudyFailed(f"{len(failed)} of {len(launch)} jobs failed (manifest: "
                                      f"{sweep_dir / manifest.MANIFEST_FILE})", len(failed), len(launch)),
                          printed=True)
        if errors:
            raise errors[0]
        return returns

    # -- files ------------------------------------------------------------------------------------
    def _save_multirun_yaml(self, sweep_dir: Path, plan: Plan) -> None:
        """Hydra's multirun.yaml, plus the planned job order under hydra.sweeper.plan."""
        assert self.config is not None
        cfg = OmegaConf.create(OmegaConf.to_container(self.config, resolve=False))
        counts = plan.counts()
        with open_dict(cfg):
            cfg.hydra.sweeper.plan = {
                "study_design_hash": plan.study_design_hash, "configs": counts["valid_configs"],
                "skipped_configs": counts["skipped_configs"], "cycles": counts["cycles"], "jobs": counts["jobs"],
                "order": plan.settings["order"],
                "jobs_in_order": [f"{j.index} cycle={j.cycle} config=c{j.config} {j.config_hash}"
                                  for j in plan.jobs if j.status != "skipped"]}
        atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(cfg))  # as OmegaConf.save, atomically

    def _write_manifest(self, sweep_dir: Path, plan: Plan, study: StudyConfig) -> None:
        m = manifest.new(plan.study_design_hash, plan.manifest_jobs(), sweep_dir=str(sweep_dir),
                         n_cycles=study.n_cycles, order=study.order, status="running")
        done = self._done_dirs
        for entry, job in zip(m["jobs"], plan.jobs):
            if job.status == "completed":
                entry["status"] = "completed"
                entry["job_dir"] = done.get(job.key)
        manifest.write(sweep_dir, m)

    def _finish(self, sweep_dir: Path, launched: dict[int, JobReturn]) -> tuple[list[dict[str, Any]], bool]:
        """Re-aggregate the manifest from the job folders (any launcher), set the study status,
        write the sweep summary. Returns the failed jobs and whether the summary (which lists
        them) was printed."""
        m = manifest.load(sweep_dir)
        for entry in (m or {}).get("jobs", []):  # a launcher's own folder names (e.g. subdir=override_dirname)
            ret = launched.get(entry["index"])
            out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret and ret.hydra_cfg else None
            if out and not entry.get("job_dir"):
                entry["job_dir"] = str(out)
        m = manifest.rebuild(sweep_dir, m)
        for entry in m["jobs"]:
            ret = launched.get(entry["index"])
            if ret is not None and ret.status == JobStatus.FAILED and entry["status"] in ("planned", "interrupted"):
                exc = ret._return_value
                entry["status"] = "failed"  # failed before its result.json existed
                entry["error"] = {"type": type(exc).__name__, "message": str(exc), "reason": "exception"}
        statuses = {e["status"] for e in m["jobs"]}
        failed = [e for e in m["jobs"] if e["status"] == "failed"]
        if statuses & {"planned", "running", "interrupted"}:
            m["status"] = "interrupted"
        else:
            m["status"] = "failed" if failed else "completed"
        m["finished_at"] = now_iso()
        manifest.write(sweep_dir, m)
        if OmegaConf.select(self.config, "study.objective") is not None:  # objective values in the manifest
            from llem.search.launching import record_objectives

            record_objectives(sweep_dir)
        summarized = False
        try:
            from llem.results.study_summary import write_sweep_summary

            table = write_sweep_summary(sweep_dir)
            if table:
                print(table, flush=True)
                summarized = True
        except ImportError:
            pass
        except Exception as e:  # a report bug never fails a study
            print(f"llem: sweep summary not written: {type(e).__name__}: {e}", file=sys.stderr)
        return failed, summarized


def _study_problems(study: StudyConfig) -> list[str]:
    """study.* problems (checked once, before expanding: the plan depends on them)."""
    found = [p for p in problems(ExperimentConfig(study=study)) if p[0].startswith("study.")]
    if study.job_estimate_s < 0:
        found.append(("study.job_estimate_s", study.job_estimate_s, "a number >= 0"))
    return str(ConfigError(found)).splitlines() if found else []


def _read_plan(sweep_dir: Path) -> Optional[dict[str, Any]]:
    path = sweep_dir / manifest.PLAN_FILE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
