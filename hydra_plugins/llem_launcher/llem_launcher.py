"""llem's Hydra launcher: `hydra/launcher=llem` (the default in llem's conf/config.yaml).

A thin adapter over `llem.launch`: for each Hydra job it composes the job's config (as Hydra's
BasicLauncher does), pickles Hydra's own `run_job` call for it (as hydra-submitit-launcher does), and
hands that to the Supervisor, which runs it in a fresh process and survives whatever the job does.
The fork server (zygote) those processes are forked from starts in `setup`, so its imports overlap
the sweeper's planning.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside
sys.modules, where dataclasses cannot resolve string annotations.
"""

import atexit
import copy
import logging
import pickle
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class LlemLauncherConf:
    _target_: str = "hydra_plugins.llem_launcher.llem_launcher.LlemLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="llem", node=LlemLauncherConf, provider="llem")


def run_in_child(hydra_context: HydraContext, task_function: TaskFunction, sweep_config: DictConfig,
                 singleton_state: dict[Any, Any]) -> JobReturn:
    """Runs inside the job process: Hydra's run_job, exactly as BasicLauncher calls it."""
    from llem.launch.outcome import JobFailed

    Singleton.set_state(singleton_state)
    setup_globals()
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        exc = ret._return_value
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        ret._return_value = JobFailed(f"{type(exc).__name__}: {exc}")  # always picklable
    return ret


def _override(overrides: Sequence[str], key: str) -> Optional[str]:
    for line in overrides:
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    return None


class LlemLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self._configs: dict[int, Any] = {}  # job num -> (overrides, job_dir, job name) for JobReturns
        self._fork_server: Any = None  # llem.launch.zygote.ForkServer, for every launch() of this sweep

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self._start_fork_server()

    def _start_fork_server(self) -> None:
        """Start the zygote's imports now, in the background (not for a dry run or study.fresh_process=spawn;
        bad study settings are reported by launch())."""
        from llem.config.validate import ConfigError
        from llem.launch.settings import LaunchSettings
        from llem.launch.zygote import ForkServer, wanted

        assert self.config is not None
        study: Any = self.config.get("study") or {}
        try:
            settings = LaunchSettings.from_study(OmegaConf.to_container(study, resolve=True) if study else {})  # type: ignore[arg-type]
        except ConfigError:
            return
        if self._fork_server is None and wanted(settings.fresh_process) and not study.get("dry_run"):
            self._fork_server = ForkServer().start()
            atexit.register(self._fork_server.close)

    def _prepare(self, num: int, overrides: list[str]) -> Any:
        """Compose job `num` and pickle its run; a job that cannot be composed fails alone."""
        import cloudpickle

        from llem.launch.outcome import Outcome
        from llem.launch.supervisor import Finished, JobPlan
        from llem.study.hashing import config_hash

        assert self.config is not None and self.hydra_context is not None
        try:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            HydraConfig.instance().set_config(sweep_config)  # as run_job does: ${hydra:...} resolves
            job_dir = Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
            sj = sweep_config.get("study_job") or {}
            index = int(sj.get("index")) if sj.get("index") is not None else num
            cycle = int(sj.get("cycle") or 0)
            chash = sj.get("config_hash")
            if chash is None:
                task_cfg = copy.deepcopy(sweep_config)
                with read_write(task_cfg), open_dict(task_cfg):
                    del task_cfg["hydra"]
                chash = config_hash(OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True))  # type: ignore[arg-type]
            payload = cloudpickle.dumps((run_in_child, (self.hydra_context, self.task_function, sweep_config,
                                                        Singleton.get_state()), {}))
        except Exception as e:
            err = {"type": type(e).__name__, "message": str(e), "reason": "config",
                   "traceback": traceback.format_exc()}
            print(f"llem: job {num} could not be prepared: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            index = int(_override(overrides, "study_job.index") or num)
            return Finished(num, index, Outcome("failed", "config", err, None, None, rewrite=False))
        job_dir = job_dir.absolute()
        task_overrides = list(sweep_config.hydra.overrides.task)
        identity = {"config_hash": chash, "study_design_hash": sj.get("study_design_hash"), "cycle": cycle,
                    "job_index": index, "overrides": task_overrides, "job_dir": str(job_dir)}
        label = " ".join(o for o in filter_overrides(overrides) if not o.startswith(("study_job.", "study."))
                         ) or "(defaults)"
        plan = JobPlan(num=num, index=index, cycle=cycle, job_dir=job_dir, label=label, payload=payload,
                       identity=identity, fields={"config_hash": chash, "overrides": task_overrides})
        self._configs[num] = (task_overrides, str(job_dir), str(sweep_config.hydra.job.name))
        return plan

    def _job_return(self, fin: Any) -> JobReturn:
        from llem.launch.outcome import JobFailed

        ret: Optional[JobReturn] = None
        if fin.returned:
            try:
                ret = pickle.loads(fin.returned)
            except Exception:
                ret = None
        if ret is not None and fin.outcome.status == "completed" and ret.status == JobStatus.COMPLETED:
            return ret
        overrides, job_dir, name = self._configs.get(fin.num, ([], None, None))
        ret = ret or JobReturn(overrides=overrides, working_dir=job_dir, task_name=name)
        if fin.outcome.status == "completed":
            ret.status, ret._return_value = JobStatus.COMPLETED, {"status": "completed"}
        else:
            err = fin.outcome.error or {}
            ret.status = JobStatus.FAILED
            ret._return_value = JobFailed(f"job {fin.index} {fin.outcome.status} ({fin.outcome.reason}): "
                                          f"{err.get('type', '')}: {err.get('message', '')}")
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from llem.config.validate import ConfigError
        from llem.launch.settings import LaunchSettings
        from llem.launch.slots import SHARED_NODE_WARNING, launcher_slots
        from llem.launch.supervisor import Supervisor
        from llem.study import manifest
        from llem.study.gaps import gpu_host, resolve_gaps
        from llem.study.hashing import design_hash

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study: Any = self.config.get("study") or OmegaConf.create({})
        try:
            settings = LaunchSettings.from_study(OmegaConf.to_container(study, resolve=True))  # type: ignore[arg-type]
            slots = launcher_slots(settings.gpus_per_job)
        except ConfigError as e:
            print(f"llem: invalid configuration:\n  {str(e).replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
            raise SystemExit(2) from None
        gaps = resolve_gaps(study, gpu_host() if study.get("gaps", False) else False)
        if len(slots) > 1:
            print(SHARED_NODE_WARNING.format(n=len(slots), per=settings.gpus_per_job), file=sys.stderr, flush=True)

        created = manifest.load(sweep_dir) is None
        entries = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            index = _override(overrides, "study_job.index")
            entry: dict[str, Any] = {"index": int(index) if index is not None else num, "status": "planned",
                                     "overrides": list(overrides)}
            if created:
                entry["cycle"] = int(_override(overrides, "study_job.cycle") or 0)
            entries.append(entry)
        if created:  # no llem sweeper before us (e.g. hydra/sweeper=basic): make our own manifest
            manifest.ensure_jobs(sweep_dir, entries, {"status": "running", "sweep_dir": str(sweep_dir),
                                                      "created_by": "llem launcher"})
        log.info(f"llem launcher: {len(job_overrides)} job(s), one process each, sweep dir {sweep_dir}")

        self._configs = {}
        requests = [partial(self._prepare, initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        finished = Supervisor(settings, sweep_dir, slots, gaps, fork_server=self._fork_server).run(requests)
        finished.sort(key=lambda f: f.num)

        failed = [f for f in finished if f.outcome.status != "completed"]
        for f in failed:
            if f.plan is None:  # never started: the manifest still says planned
                manifest.set_status(sweep_dir, f.index, "failed", error=f.outcome.error)
        if created:
            m = manifest.load(sweep_dir) or {}
            hashes = [str(j["config_hash"]) for j in m.get("jobs", []) if j.get("config_hash")]
            manifest.set_study_status(sweep_dir, "failed" if failed else "completed",
                                      study_design_hash=design_hash(hashes) if hashes else None)
        target = str(OmegaConf.select(self.config, "hydra.sweeper._target_", default="") or "")
        if failed and "llem_sweeper" not in target:  # llem's sweeper prints its own failure summary
            print(f"llem: {len(failed)} of {len(finished)} jobs failed (manifest: {sweep_dir / manifest.MANIFEST_FILE}):",
                  file=sys.stderr)
            for f in failed[:20]:
                err = f.outcome.error or {}
                print(f"  job {f.index}: {f.outcome.status} ({f.outcome.reason}): {err.get('type', '')}: "
                      f"{str(err.get('message', '')).splitlines()[0] if err.get('message') else ''}",
                      file=sys.stderr)
        return [self._job_return(f) for f in finished]

