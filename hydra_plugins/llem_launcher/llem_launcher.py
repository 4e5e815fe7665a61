"""llem's Hydra launcher: `hydra/launcher=llem` (the default in llem's conf/config.yaml).

A thin adapter over `llem.launch`: for each Hydra job it composes the job's config (as Hydra's
BasicLauncher does), pickles Hydra's own `run_job` call for it (as hydra-submitit-launcher does), and
hands that to the Supervisor, which runs it in a fresh process and survives whatever the job does.

On llem's own app (a config with llem's `study`/`study_job` nodes) a job's result.json is the truth,
and the launcher adds what a measured study needs: gaps, the manifest, a result.json for a job that
died. On any other Hydra app it is a plain process-per-job launcher: the child's own JobReturn is
returned as is and nothing of llem's is written into the app's folders (its bookkeeping lives in a
private scratch folder), so it passes Hydra's own launcher test suites (tests/test_hydra_suites.py).

llem's sweeper hands each job its cycle, hashes and index as one Hydra-side override
(`++hydra.job.env_set.LLEM_STUDY_JOB=...`, llem.study.jobtag), the same for every launcher: Hydra files
it under `hydra.overrides.hydra`, so the job's identity (`hydra.overrides.task`, `overrides.yaml`,
`override_dirname`, `JobReturn.overrides`) holds only the user's overrides. This launcher composes with
the overrides as given and only reads the tag for its manifest entries and progress labels.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside
sys.modules, where dataclasses cannot resolve string annotations.
"""

import atexit
import contextlib
import copy
import logging
import os
import pickle
import shutil
import sys
import tempfile
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

from llem.launch.settings import is_llem_app

log = logging.getLogger(__name__)

STATUS_FILE = "result.json"  # what the Supervisor reads in a job's folder (the scratch one for other apps)


@dataclass
class LlemLauncherConf:
    """Every knob of llem's launcher (README "Launcher settings"); `study.<same name>` is an alias.
    A value left at its default here takes the study's; two different non-default values are refused."""

    _target_: str = "hydra_plugins.llem_launcher.llem_launcher.LlemLauncher"
    timeout_s: Optional[float] = None  # per-job limit for the whole job process; null/0 = none
    kill_grace_s: float = 10.0  # a job being stopped gets SIGTERM, then SIGKILL this long after
    on_unhealthy: str = "warn"  # warn | wait | abort: what a failed GPU health check does
    health_max_memory_used_mib: float = 1024.0  # GPU memory already in use above this = unhealthy
    health_check_processes: bool = True  # a process not ours on the job's GPUs = unhealthy
    health_wait_max_s: float = 600.0  # on_unhealthy=wait: give up waiting after this long
    health_poll_s: float = 10.0  # on_unhealthy=wait: re-check interval
    gpus_per_job: int = 0  # 0: one job at a time, no pinning; N: floor(GPUs / N) jobs at once, pinned
    progress: bool = True  # a progress line before and after each job
    fresh_process: str = "auto"  # fork (from a zygote) | spawn (new interpreter) | auto (fork on Linux)


ConfigStore.instance().store(group="hydra/launcher", name="llem", node=LlemLauncherConf, provider="llem")

# What the zygote imports for an app that is not llem's: Hydra's job machinery only (fast to start;
# the app's own modules are imported by each job, as with any launcher).
PLAIN_PRELOAD = (
    "cloudpickle", "hydra.core.utils",
    "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source", "hydra._internal.core_plugins.structured_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra_plugins.llem_launcher.llem_launcher",
)


def run_in_child(hydra_context: HydraContext, task_function: TaskFunction, sweep_config: DictConfig,
                 singleton_state: dict[Any, Any], status_dir: Optional[str] = None) -> JobReturn:
    """Runs inside the job process: Hydra's run_job, exactly as BasicLauncher calls it.

    `status_dir` (apps other than llem's): a private folder where the job leaves a small status
    record for the Supervisor, which would otherwise look for llem's result.json in the app's folder.
    """
    from llem.launch.outcome import JobFailed

    Singleton.set_state(singleton_state)
    setup_globals()
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    error = None
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        exc = ret._return_value
        # the launcher's one `llem: job N failed` line says it; a failed trial (llem.search) too
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and type(exc).__name__ != "ObjectiveMissing":
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        error = {"type": type(exc).__name__, "message": str(exc),
                 "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
        ret._return_value = _picklable(exc, JobFailed(f"{type(exc).__name__}: {exc}"))
    elif ret.status == JobStatus.COMPLETED:
        ret._return_value = _picklable(ret._return_value, None)
    if status_dir is not None:
        status = {"status": "completed" if ret.status == JobStatus.COMPLETED else "failed", "error": error,
                  "identity": {"pid": os.getpid()}}
        from llem.io import atomic_write_json

        atomic_write_json(Path(status_dir, STATUS_FILE), status)
    return ret


def run_pickled(sys_path: list[str], job: bytes) -> JobReturn:
    """The job's entry in its process: the launcher's import path first (what the launcher could import,
    e.g. a test module or an app found through a sys.path change, the job can import too), then the
    pickled run_in_child call."""
    sys.path.extend(p for p in sys_path if p not in sys.path)
    function, args, kwargs = pickle.loads(job)
    return function(*args, **kwargs)


def _picklable(value: Any, fallback: Any) -> Any:
    """The value if it survives the trip to the launcher, else the fallback (as joblib's launcher does)."""
    import cloudpickle

    try:
        cloudpickle.dumps(value)
        return value
    except Exception as e:
        print(f"llem: job return value not sent to the launcher: {type(e).__name__}: {e}", file=sys.stderr)
        return fallback


class LlemLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = {k: v for k, v in settings.items() if not k.startswith("_")}
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self._configs: dict[int, Any] = {}  # job num -> (overrides, job_dir, job name) for JobReturns
        self._fork_server: Any = None  # llem.launch.zygote.ForkServer while a sweep uses it
        self.held = False  # a sweeper holds the zygote across launch() calls and calls close()
        self._scratch: Optional[Path] = None
        self._noted = False  # the sweeper x launcher support line (llem.search.launching) is printed once
        self._search_offset: Optional[int] = None  # llem.search: first job number of this search in its folder

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # -- settings and the zygote ------------------------------------------------------------------
    @property
    def llem_app(self) -> bool:
        return self.config is not None and is_llem_app(self.config)

    def launch_settings(self) -> Any:
        """hydra.launcher.* merged with the study.* aliases (llem's app only); raises ConfigError."""
        from llem.launch.settings import LaunchSettings

        assert self.config is not None
        study: Any = {}
        if self.llem_app:
            study = OmegaConf.to_container(self.config.study, resolve=True) or {}
        return LaunchSettings.resolve(self.settings, study)

    def prestart(self) -> None:
        """Start the zygote's imports now, in the background, and keep it for every launch() until
        close(): llem's sweeper calls this once the study may start, so the imports overlap planning.
        Not for a dry run or fresh_process=spawn; bad settings are reported by launch()."""
        from llem.errors import ConfigError
        assert self.config is not None
        self.held = True
        try:
            settings = self.launch_settings()
        except ConfigError:
            return
        if not (self.llem_app and OmegaConf.select(self.config, "study.dry_run")):
            self._zygote(settings)

    def _zygote(self, settings: Any) -> Any:
        from llem.launch.zygote import ForkServer, wanted

        if self._fork_server is None and wanted(settings.fresh_process):
            preload = None if self.llem_app else PLAIN_PRELOAD  # None: torch, transformers, llem's job code
            self._fork_server = ForkServer(preload=preload).start()
            atexit.register(self._fork_server.close)
        return self._fork_server

    def close(self) -> None:
        """Stop the zygote (its jobs are done) and drop the hold; safe to call more than once."""
        self.held = False
        server, self._fork_server = self._fork_server, None
        if server is not None:
            server.close()
            atexit.unregister(server.close)

    # -- one job ----------------------------------------------------------------------------------
    def _prepare(self, num: int, overrides: list[str]) -> Any:
        """Compose job `num` and pickle its run; on llem's app a job that cannot be composed fails alone
        (other apps: the error is raised, as Hydra's BasicLauncher does)."""
        import cloudpickle

        from llem.launch.outcome import Outcome
        from llem.launch.supervisor import Finished, JobPlan
        from llem.study.hashing import config_hash
        from llem.study.jobtag import study_job_of, user_overrides

        assert self.config is not None and self.hydra_context is not None
        llem_app = self.llem_app
        user = user_overrides(overrides)
        sj: dict[str, Any] = {}
        try:
            sj = study_job_of(overrides) if llem_app else {}
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            HydraConfig.instance().set_config(sweep_config)  # as run_job does: ${hydra:...} resolves
            job_dir = Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
            status_dir = None
            if llem_app:
                index = int(sj["index"]) if sj.get("index") is not None else num
                cycle = int(sj.get("cycle") or 0)
                chash = sj.get("config_hash")
                if chash is None:
                    task_cfg = copy.deepcopy(sweep_config)
                    with read_write(task_cfg), open_dict(task_cfg):
                        del task_cfg["hydra"]
                    chash = config_hash(OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True))  # type: ignore[arg-type]
            else:
                index, cycle, chash = num, 0, None
                assert self._scratch is not None
                status_dir = str(self._scratch / "jobs" / str(num))
            job = cloudpickle.dumps((run_in_child, (self.hydra_context, self.task_function, sweep_config,
                                                    Singleton.get_state(), status_dir), {}))
            payload = cloudpickle.dumps((run_pickled, (list(sys.path), job), {}))
        except Exception as e:
            if not llem_app:
                raise
            err = {"type": type(e).__name__, "message": str(e), "reason": "config",
                   "traceback": traceback.format_exc()}
            print(f"llem: job {num} could not be prepared: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            index = int(sj["index"]) if sj.get("index") is not None else num
            return Finished(num, index, Outcome("failed", "config", err, None, None, rewrite=False))
        job_dir = job_dir.absolute()
        task_overrides = list(sweep_config.hydra.overrides.task)
        self._configs[num] = (task_overrides, str(job_dir), str(sweep_config.hydra.job.name))
        label = " ".join(o for o in filter_overrides(user) if not o.startswith("study.")) or "(defaults)"
        if status_dir is not None:  # the Supervisor's view of this job lives in the scratch folder
            return JobPlan(num=num, index=num, cycle=0, job_dir=Path(status_dir), label=label, payload=payload,
                           identity={}, fields={"overrides": task_overrides})
        identity = {"config_hash": chash, "study_design_hash": sj.get("study_design_hash"), "cycle": cycle,
                    "job_index": index, "overrides": task_overrides, "job_dir": str(job_dir)}
        gpu = OmegaConf.to_container(sweep_config.gpu, resolve=True) if "gpu" in sweep_config else None
        return JobPlan(num=num, index=index, cycle=cycle, job_dir=job_dir, label=label, payload=payload,
                       identity=identity, fields={"config_hash": chash, "overrides": task_overrides}, gpu=gpu)

    def _job_return(self, fin: Any) -> JobReturn:
        from llem.launch.outcome import JobFailed

        ret: Optional[JobReturn] = None
        if fin.returned:
            try:
                ret = pickle.loads(fin.returned)
            except Exception:
                ret = None
        if ret is not None and (not self.llem_app or (fin.outcome.status == "completed" and (
                ret.status == JobStatus.COMPLETED or type(ret._return_value).__name__ == "ObjectiveMissing"))):
            return ret  # the child's own JobReturn (other apps: always; llem's: when its result agrees)
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

    # -- a batch of jobs --------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from llem.errors import ConfigError
        from llem.launch.slots import SHARED_NODE_WARNING, launcher_slots
        from llem.launch.supervisor import Supervisor
        from llem.study.gaps import Gaps

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            try:
                settings = self.launch_settings()
                slots = launcher_slots(settings.gpus_per_job)
            except ConfigError as e:
                from llem.study.exits import exit_or_raise

                exit_or_raise(e)
            if len(slots) > 1:
                print(SHARED_NODE_WARNING.format(n=len(slots), per=settings.gpus_per_job), file=sys.stderr, flush=True)
            log.info(f"llem launcher: {len(job_overrides)} job(s), one process each, sweep dir {sweep_dir}")
            self._configs = {}
            search = self._search_run() if self.llem_app else None  # study.objective under another sweeper
            if search is not None:
                from llem.search.launching import next_free_index

                if self._search_offset is None:  # jobs of an earlier search in this folder are kept
                    self._search_offset = next_free_index(sweep_dir)
                job_overrides, initial_job_idx = search.expand(job_overrides, initial_job_idx)
                initial_job_idx += self._search_offset
                self.held = True  # Optuna calls launch() per batch of trials: one zygote for all (closed at exit)
            fork_server = self._zygote(settings)
            if self.llem_app:  # the folder is this study's before its manifest is touched (llem.study.lock)
                from llem.study.exits import exit_or_raise
                from llem.study.lock import hold

                stack.enter_context(hold(sweep_dir, on_refused=exit_or_raise))
                created = self._llem_manifest(sweep_dir, job_overrides, initial_job_idx)
                gaps = self._gaps()
                book_dir = sweep_dir
            else:  # nothing of llem's in the app's folders: the Supervisor's files go to a scratch folder
                created, gaps = False, Gaps(0.0, 0.0)
                self._scratch = book_dir = Path(tempfile.mkdtemp(prefix="llem-launcher-"))
            requests = [partial(self._prepare, initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
            finished = Supervisor(settings, book_dir, slots, gaps, fork_server=fork_server).run(requests)
            finished.sort(key=lambda f: f.num)
            if self.llem_app:
                self._llem_finish(sweep_dir, finished, created)
            returns = [self._job_return(f) for f in finished]
            return search.collapse(returns) if search is not None else returns
        finally:
            stack.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
            if not self.held:
                self.close()

    def _search_run(self) -> Any:
        """llem.search.launching.SearchRun when study.objective is set under a sweeper not llem's (Optuna):
        objectives checked, cycles per trial, NaN for a failed trial; the support line printed once."""
        from llem.errors import ConfigError
        from llem.search.launching import SearchRun, launcher_kind, support_line, sweeper_kind
        from llem.study.exits import exit_or_raise

        assert self.config is not None
        if not self._noted and sweeper_kind(self.config) != "llem":
            self._noted = True
            line = support_line(sweeper_kind(self.config), launcher_kind(self.config))
            if line:
                print(f"llem: {line}", file=sys.stderr, flush=True)
        try:
            return SearchRun.of(self.config)
        except ConfigError as e:
            exit_or_raise(e)

    def _gaps(self) -> Any:
        from llem.study.gaps import gpu_host, resolve_gaps

        assert self.config is not None
        study = self.config.study
        return resolve_gaps(study, gpu_host() if study.get("gaps", False) else False)

    def _llem_manifest(self, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> bool:
        """The manifest llem's sweeper writes, made here when another sweeper (e.g. basic) runs llem's app."""
        from llem.study import manifest
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

    def _llem_finish(self, sweep_dir: Path, finished: list[Any], created: bool) -> None:
        from llem.study import manifest
        from llem.study.hashing import design_hash

        assert self.config is not None
        failed = [f for f in finished if f.outcome.status != "completed"]
        for f in failed:
            if f.plan is None:  # never started: the manifest still says planned
                manifest.set_status(sweep_dir, f.index, "failed", error=f.outcome.error)
        if created:
            m = manifest.load(sweep_dir) or {}
            hashes = [str(j["config_hash"]) for j in m.get("jobs", []) if j.get("config_hash")]
            manifest.set_study_status(sweep_dir, "failed" if failed else "completed",
                                      study_design_hash=design_hash(hashes) if hashes else None)
        if OmegaConf.select(self.config, "study.objective") is not None:
            from llem.search.launching import record_objectives

            record_objectives(sweep_dir)
        target = str(OmegaConf.select(self.config, "hydra.sweeper._target_", default="") or "")
        if failed and "llem_sweeper" not in target:  # llem's sweeper prints its own failure summary
            print(f"llem: {len(failed)} of {len(finished)} jobs failed (manifest: {sweep_dir / manifest.MANIFEST_FILE}):",
                  file=sys.stderr)
            for f in failed[:20]:
                err = f.outcome.error or {}
                print(f"  job {f.index}: {f.outcome.status} ({f.outcome.reason}): {err.get('type', '')}: "
                      f"{str(err.get('message', '')).splitlines()[0] if err.get('message') else ''}",
                      file=sys.stderr)
