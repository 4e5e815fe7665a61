"""The Python API for notebooks and scripts: `llem.run(...)` and `llem.run_study(...)`.

    import llem
    r = llem.run("n=8", "pytorch.batch_size=4")          # one measured job → llem.result.Result
    r.status, r.throughput["output_tok_s"], r.job_dir
    df = llem.run_study("pytorch.batch_size=1,2,4", sweep_dir="studies/bs")   # → pandas DataFrame

`run` composes the job with Hydra's compose API (llem's conf/, `config_dir` added to the search path),
validates it and runs it with the same job code as `python -m llem` (llem.job.run_job). By default it
does so in a fresh Python process (a notebook's CUDA state stays clean; output is streamed into the
notebook), `in_process=True` runs it here. It returns the typed result: the `Result` dataclass of
llem/result.py (sections are dicts, as in result.json), with `job_dir` set to its folder.

`run_study` runs a study through llem's sweeper and launcher in this process (Hydra's multirun API:
the same plan, fresh process per job, manifest, resume, `study.*` settings) and returns one row per
job as `llem.results.load` gives. Outcomes are exceptions from llem.errors: a bad setting raises a
`UserError` (ConfigError, StudyError: exit code 2 on the command line), failed jobs `StudyFailed`
(exit code 1) after every other job ran; `llem.results.load(sweep_dir)` still reads what completed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llem.errors import LlemError, UserError


class JobFailed(LlemError):
    """`llem.run`: the job ran and failed; `result` is its Result (status failed, error)."""

    exit_code = 1

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


def _overrides(overrides: Sequence[str]) -> list[str]:
    from llem.config.aliases import rename_overrides
    from llem.config.overrides import check_argv, scope_backend_overrides

    args, problem = rename_overrides([str(o) for o in overrides])  # energy.rapl_root → energy.rapl.root
    if not problem:
        args, problem = scope_backend_overrides(args)
    problem = problem or check_argv(args)
    if problem:
        raise UserError(problem)
    return args


def _default_run_dir() -> str:
    now = _dt.datetime.now()
    base = Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return str(path.absolute())


def _compose(overrides: list[str], config_dir: str | None) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from llem.config.paths import conf_dir
    from llem.config.store import register

    register()
    extra = [f"hydra.searchpath=[file://{Path(config_dir).absolute()}]"] if config_dir else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
        return compose(config_name="config", overrides=overrides + extra, return_hydra_config=True)


def run_in_process(overrides: Sequence[str], config_dir: str | None = None, run_dir: str | None = None) -> Any:
    """Compose, validate and run one job in this process; the Result (raises UserError for bad input)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    from llem.app import to_experiment
    from llem.job import run_job
    from llem.study.hashing import config_hash

    args = _overrides(overrides)
    try:
        cfg = _compose(args, config_dir)
    except Exception as e:
        from llem.app import user_error_lines

        lines = user_error_lines(e)
        if lines is None:
            raise
        raise UserError("\n".join(lines)) from None
    out_dir = Path(run_dir or _default_run_dir()).absolute()
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves as under `python -m llem`
        del cfg["hydra"]
    experiment, resolved = to_experiment(cfg)
    chash = config_hash(resolved)
    try:
        result = run_job(experiment, out_dir, resolved, args, chash)
    except UserError as e:
        e.result_file = str(out_dir / "result.json")  # type: ignore[attr-defined]
        raise
    spec = OmegaConf.select(cfg, "study.objective")
    if spec is not None:  # the same objective block as a Hydra run records
        from llem.io import atomic_write_json
        from llem.search.objective import block, parse

        result.objective = block(result.as_dict(), parse(OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec))
        atomic_write_json(out_dir / "result.json", result.as_dict())
    result.job_dir = str(out_dir)  # type: ignore[attr-defined]
    return result


def load_result(job_dir: str | os.PathLike[str]) -> Any:
    """result.json of a job folder as the typed `Result` (unknown keys of a newer minor are dropped)."""
    from dataclasses import fields

    from llem.result import Result

    data = json.loads(Path(job_dir, "result.json").read_text(encoding="utf-8"))
    names = {f.name for f in fields(Result)}
    result = Result(**{k: v for k, v in data.items() if k in names})
    result.job_dir = str(Path(job_dir).absolute())  # type: ignore[attr-defined]
    return result


def run(*overrides: str, config_dir: str | None = None, in_process: bool = False,
        run_dir: str | None = None) -> Any:
    """Run one measured job; returns its `llem.result.Result` (status completed).

    overrides: as on the command line (`"n=8"`, `"backend=vllm"`, `"pytorch.batch_size=4"`).
    config_dir: a folder of your own configs, added to Hydra's search path (as `--config-dir`).
    in_process: run here instead of in a fresh Python process (default: fresh, so this process never
    loads the model, torch's CUDA state included). run_dir: the job's folder (default
    outputs/<date>/<time>, as `python -m llem`). Bad input raises `UserError` before any model loads;
    a job that fails raises `JobFailed` with `.result`."""
    if in_process:
        return run_in_process(overrides, config_dir, run_dir)
    out_dir = run_dir or _default_run_dir()
    args = json.dumps({"overrides": list(overrides), "config_dir": config_dir, "run_dir": out_dir})
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # a checkout's llem stays importable in the child
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "llem.search.api", args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    problems: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # progress into the notebook, as it comes
        print(line, end="", flush=True)
        if line.startswith("llem: "):
            problems.append(line[len("llem: "):].rstrip("\n"))
    rc = proc.wait()
    if rc == 2:
        raise UserError("\n".join(problems) or f"llem.run: invalid input (exit code 2): {list(overrides)}")
    path = Path(out_dir, "result.json")
    result = load_result(out_dir) if path.is_file() else None
    if rc != 0 or result is None or result.status != "completed":
        why = (result.error or {}).get("message") if result is not None and result.error else f"exit code {rc}"
        raise JobFailed(f"llem.run: job {result.status if result else 'failed'} in {out_dir}: {why}", result)
    return result


def run_study(*overrides: str, sweep_dir: str | os.PathLike[str], config_dir: str | None = None) -> Any:
    """Run a study (a multirun) through llem's sweeper and launcher in this process; one DataFrame row
    per job (llem.results.load). Each job runs in its own process; nothing is loaded here.
    `study.resume=true` continues a stopped study in the same sweep_dir. Raises UserError for bad input,
    llem.study.exits.StudyFailed (a LlemError) when jobs failed."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import llem.app
    import llem.results
    from llem.config.paths import conf_dir
    from llem.config.store import register

    args = _overrides(overrides) + [f"hydra.sweep.dir={Path(sweep_dir).absolute()}", "hydra.mode=MULTIRUN"]
    if config_dir:
        args.append(f"hydra.searchpath=[file://{Path(config_dir).absolute()}]")
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
            GlobalHydra.instance().hydra.multirun(config_name="config",  # type: ignore[union-attr]
                                                  task_function=llem.app.run_from_hydra, overrides=args)
    except LlemError:
        raise
    except Exception as e:
        lines = llem.app.user_error_lines(e)
        if lines is None:
            raise
        raise UserError("\n".join(lines)) from None
    finally:
        GlobalHydra.instance().clear()
    return llem.results.load(sweep_dir)


def _child(argv: list[str]) -> int:
    """`python -m llem.search.api '<json>'`: llem.run's fresh process; exit 2 for bad input."""
    spec = json.loads(argv[0])
    try:
        run_in_process(spec["overrides"], spec.get("config_dir"), spec["run_dir"])
    except UserError as e:  # as `python -m llem`: one line per problem, its exit code (2)
        for line in str(e).splitlines() or [type(e).__name__]:
            if line.strip():
                print(f"llem: {line}", file=sys.stderr, flush=True)
        return int(getattr(e, "exit_code", 2))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
