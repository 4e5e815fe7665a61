"""The logic of llem's Hydra launcher (hydra_plugins.llem_launcher.llem_launcher is the plugin class):
compose each job as Hydra's BasicLauncher does, pickle Hydra's `run_job` call for it (as
hydra-submitit-launcher does), run the batch with llem.launch.supervisor.Supervisor, and turn what each
job left into a JobReturn. Whatever a study adds comes from the launcher's `StudyHooks`
(llem.launch.contract): this module never reads the app's config nor the sweeper's name.
"""

import contextlib
import logging
import os
import pickle
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

STATUS_FILE = "result.json"  # what the Supervisor reads in a job's folder (the scratch one for other apps)

# What the zygote imports for an app that is not llem's: Hydra's job machinery only (fast to start;
# the app's own modules are imported by each job, as with any launcher).
PLAIN_PRELOAD = (
    "cloudpickle", "hydra.core.utils",
    "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source", "hydra._internal.core_plugins.structured_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra_plugins.llem_launcher.llem_launcher", "hydra_plugins.llem_launcher._core",
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


def run_pickled(sys_path: list[str], job: bytes, setup: Any = None) -> JobReturn:
    """The job's entry in its process: the launcher's import path first (what the launcher could import,
    e.g. a test module or an app found through a sys.path change, the job can import too), the study's
    `job_setup` (llem: hold the jobs' lock), then the pickled run_in_child call."""
    sys.path.extend(p for p in sys_path if p not in sys.path)
    if setup is not None:
        setup()
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



def prepare(launcher: Any, hooks: Any, num: int, overrides: list[str], scratch: Optional[Path]) -> Any:
    """Compose job `num` and pickle its run; in a study a job that cannot be composed fails alone
    (other apps: the error is raised, as Hydra's BasicLauncher does)."""
    import cloudpickle

    from llem.launch.outcome import Outcome
    from llem.launch.supervisor import Finished, JobPlan

    config, hydra_context = launcher.config, launcher.hydra_context
    ident: dict[str, Any] = {"index": num}
    try:
        ident = hooks.identity(num, overrides, None)  # the sweeper's tag: the index, if composing fails
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
        HydraConfig.instance().set_config(sweep_config)  # as run_job does: ${hydra:...} resolves
        job_dir = Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir"))) / str(
            OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
        ident = hooks.identity(num, overrides, sweep_config)
        status_dir = None if hooks.study else str(scratch / "jobs" / str(num))  # type: ignore[operator]
        job = cloudpickle.dumps((run_in_child, (hydra_context, launcher.task_function, sweep_config,
                                                Singleton.get_state(), status_dir), {}))
        payload = cloudpickle.dumps((run_pickled, (list(sys.path), job, hooks.job_setup), {}))
    except Exception as e:
        if not hooks.study:
            raise
        err = {"type": type(e).__name__, "message": str(e), "reason": "config", "traceback": traceback.format_exc()}
        print(f"llem: job {num} could not be prepared: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return Finished(num, int(ident["index"]), Outcome("failed", "config", err, None, None, rewrite=False))
    job_dir = job_dir.absolute()
    task_overrides = list(sweep_config.hydra.overrides.task)
    launcher._configs[num] = (task_overrides, str(job_dir), str(sweep_config.hydra.job.name))
    label = hooks.label(filter_overrides(list(overrides)))
    if status_dir is not None:  # the Supervisor's view of this job lives in the scratch folder
        return JobPlan(num=num, index=num, cycle=0, job_dir=Path(status_dir), label=label, payload=payload,
                       identity={}, fields={"overrides": task_overrides})
    index, cycle, chash = int(ident["index"]), int(ident["cycle"]), ident["config_hash"]
    identity = {"config_hash": chash, "study_design_hash": ident.get("study_design_hash"), "cycle": cycle,
                "job_index": index, "overrides": task_overrides, "job_dir": str(job_dir)}
    gpu = OmegaConf.to_container(sweep_config.gpu, resolve=True) if "gpu" in sweep_config else None
    return JobPlan(num=num, index=index, cycle=cycle, job_dir=job_dir, label=label, payload=payload,
                   identity=identity, fields={"config_hash": chash, "overrides": task_overrides}, gpu=gpu)


def job_return(launcher: Any, hooks: Any, fin: Any) -> JobReturn:
    """The child's own JobReturn (other apps: always; a study: when its result.json agrees), else one
    made from the job's outcome."""
    from llem.launch.outcome import JobFailed

    ret: Optional[JobReturn] = None
    if fin.returned:
        try:
            ret = pickle.loads(fin.returned)
        except Exception:
            ret = None
    if ret is not None and (not hooks.study or (fin.outcome.status == "completed" and (
            ret.status == JobStatus.COMPLETED or type(ret._return_value).__name__ == "ObjectiveMissing"))):
        return ret
    overrides, job_dir, name = launcher._configs.get(fin.num, ([], None, None))
    ret = ret or JobReturn(overrides=overrides, working_dir=job_dir, task_name=name)
    if fin.outcome.status == "completed":
        ret.status, ret._return_value = JobStatus.COMPLETED, {"status": "completed"}
    else:
        err = fin.outcome.error or {}
        ret.status = JobStatus.FAILED
        ret._return_value = JobFailed(f"job {fin.index} {fin.outcome.status} ({fin.outcome.reason}): "
                                      f"{err.get('type', '')}: {err.get('message', '')}")
    return ret


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """One batch of jobs, each in its own process (Hydra's Launcher.launch)."""
    from llem.config.validate import ConfigError
    from llem.launch.slots import SHARED_NODE_WARNING, launcher_slots
    from llem.launch.supervisor import Supervisor
    from llem.study.exits import exit_or_raise

    config = launcher.config
    assert config is not None and launcher.hydra_context is not None and launcher.task_function is not None
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    hooks = launcher.study_hooks()
    scratch: Optional[Path] = None
    stack = contextlib.ExitStack()
    try:
        try:
            settings = launcher.launch_settings()
            slots = launcher_slots(settings.gpus_per_job)
        except ConfigError as e:
            exit_or_raise(e)
        if len(slots) > 1:
            print(SHARED_NODE_WARNING.format(n=len(slots), per=settings.gpus_per_job), file=sys.stderr, flush=True)
        log.info(f"llem launcher: {len(job_overrides)} job(s), one process each, sweep dir {sweep_dir}")
        launcher._configs = {}
        hooks.check()
        job_overrides, initial_job_idx = hooks.expand(job_overrides, initial_job_idx, sweep_dir)
        if hooks.searching:
            launcher.held = True  # Optuna calls launch() per batch of trials: one zygote for all (closed at exit)
        fork_server = launcher._zygote(settings)
        stack.enter_context(hooks.begin(sweep_dir, job_overrides, initial_job_idx))
        if hooks.study:
            book_dir = sweep_dir
        else:  # nothing of llem's in the app's folders: the Supervisor's files go to a scratch folder
            scratch = book_dir = Path(tempfile.mkdtemp(prefix="llem-launcher-"))
        requests = [partial(prepare, launcher, hooks, initial_job_idx + i, list(o), scratch)
                    for i, o in enumerate(job_overrides)]
        finished = Supervisor(settings, book_dir, slots, hooks.gaps, fork_server=fork_server,
                              ledger=hooks.ledger(book_dir)).run(requests)
        finished.sort(key=lambda f: f.num)
        hooks.finish(sweep_dir, finished)
        return hooks.collapse([job_return(launcher, hooks, f) for f in finished])
    finally:
        stack.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if not launcher.held:
            launcher.close()
