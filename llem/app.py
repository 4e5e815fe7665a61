"""The Hydra app: `python -m llem [overrides]` composes one experiment and runs it as a job.

Bad input has one rule here: any `UserError` (llem's own: ConfigError, DatasetError, MeterUnavailable,
...) and any error Hydra reports about what the user wrote (an unknown group option, a value of the
wrong type, a malformed override, a YAML error in a config file) becomes one `llem: ...` line per
problem on stderr and exit code 2, without a traceback. Everything else is a bug and keeps Hydra's
report (traceback, exit 1). With HYDRA_FULL_ERROR=1 the traceback of a user error is printed too.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import llem.config.store  # noqa: F401  (registers the structured schema)
from llem.config.paths import conf_dir
from llem.errors import ConfigError, UserError


def to_experiment(cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
    """Typed dataclass + plain resolved dict (enums as strings) of a composed config.

    A key the schema lacks (added with `+key=...` by any route) or a value that does not resolve is a
    ConfigError here, before anything runs."""
    from omegaconf.errors import OmegaConfBaseException

    from llem.config.overrides import passthrough_sections, unknown_key, unknown_keys

    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        resolved.pop("hydra", None)
        extra = unknown_keys(resolved)
        if extra:
            where = f"new keys go only under {', '.join(passthrough_sections())}"
            raise ConfigError([(key, OmegaConf.select(cfg, key), f"a key of the schema; {where}") for key in extra],
                              "\n".join(f"{unknown_key(key)}; {where}" for key in extra))
        return OmegaConf.to_object(cfg), resolved
    except OmegaConfBaseException as e:
        raise ConfigError([_omegaconf_problem(e)]) from e


def run_from_hydra(cfg: DictConfig) -> Any:
    """Run the job; the status dict, or with study.objective its value(s) for Hydra (llem/search)."""
    if OmegaConf.select(cfg, "study.objective") is not None:
        from llem.search.returns import objective_return

        return objective_return(cfg, _run_from_hydra)
    return _run_from_hydra(cfg)


def _run_from_hydra(cfg: DictConfig) -> dict[str, Any]:
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llem.faults import exit_one_line, stop_signals_interrupt
    from llem.job import run_job
    from llem.render import render
    from llem.study.hashing import config_hash

    logging.raiseExceptions = False  # a log file that became unwritable: no "--- Logging error ---" traceback
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    single = _CLI and hc.mode == RunMode.RUN  # a single run on the command line (studies: the launcher's)
    try:
        with stop_signals_interrupt() if single else contextlib.nullcontext():  # SIGTERM/SIGHUP as SIGINT
            _set_study_job(cfg, hc.job.env_set)
            experiment, resolved = to_experiment(cfg)
            chash = experiment.study_job.config_hash or config_hash(resolved)
            try:
                result = run_job(experiment, out_dir, resolved, list(hc.overrides.task), chash)
            except UserError as e:  # the job wrote result.json (status failed); say where, on the command line
                from llem.io import StorageError

                if not isinstance(e, StorageError):  # ... unless writing it is what failed
                    e.result_file = str(out_dir / "result.json")  # type: ignore[attr-defined]
                raise
    except UserError as e:
        if single:  # here, not after Hydra's "Error executing job" line
            _exit_user_error(e, user_error_lines(e) or [str(e)])
        raise
    except (Exception, KeyboardInterrupt) as e:  # a signal, a server gone, a bug: one line (llem/faults.py)
        if single:
            written = out_dir / "result.json"
            exit_one_line(e, str(written) if written.is_file() else None)
        raise
    if not experiment.quiet:
        print(render(result.as_dict(), str(out_dir)), flush=True)
    return {"status": result.status, "config_hash": chash, "output_tok_s": result.throughput.get("output_tok_s")}


def _set_study_job(cfg: DictConfig, env_set: Any) -> None:
    """The job's place in its study, from the tag llem's sweeper passes through Hydra's own channel
    (`hydra.job.env_set.LLEM_STUDY_JOB`, llem.study.jobtag) into `cfg.study_job`; no tag: as composed."""
    from omegaconf import open_dict, read_write

    from llem.study.jobtag import STUDY_JOB_ENV, parse_tag

    tag = env_set.get(STUDY_JOB_ENV) if env_set is not None else None
    if tag is None or "study_job" not in cfg:
        return
    with read_write(cfg), open_dict(cfg):
        for key, value in parse_tag(tag).items():
            cfg.study_job[key] = value


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    return run_from_hydra(cfg)


def main() -> None:
    """Console entry: friendly unknown-key errors first, then Hydra, with user errors mapped to exit 2."""
    from llem.config.aliases import rename_overrides
    from llem.config.inputs import argv_order_problem
    from llem.config.overrides import check_argv, scope_backend_overrides

    if "--version" in sys.argv[1:]:  # before Hydra, whose parser has no such flag
        from llem import __version__

        print(f"llem {__version__}")
        sys.exit(0)
    problem = argv_order_problem(sys.argv[1:])  # `x=1 -m y=2`: argparse's usage text otherwise
    if not problem:  # renamed keys (energy.rapl_root → energy.rapl.root): new spelling, one warning each
        sys.argv[1:], problem = rename_overrides(sys.argv[1:])
    if not problem:
        sys.argv[1:], problem = scope_backend_overrides(sys.argv[1:])
    problem = problem or check_argv(sys.argv[1:])
    if problem:
        print(f"llem: {problem}", file=sys.stderr)
        sys.exit(2)
    from llem.gpu.apply import repair_stale

    repair_stale()  # GPU settings a killed llem left on this host go back first (one line each)
    with _user_errors_exit_2():
        _hydra_main()


# -- bad input → one line, exit 2 -----------------------------------------------------------------------
@contextlib.contextmanager
def _user_errors_exit_2() -> Iterator[None]:
    """Hydra's CLI runs every step (compose, run, multirun, --cfg, --info) inside
    `hydra._internal.utils.run_and_report`, which prints any exception with a trace and exits 1. For the
    duration of `main()`, each step runs inside that same function (so plugins that check for it still
    see it) wrapped by `_report_user_error`; Hydra's own report stays for everything else."""
    try:
        from hydra._internal import utils as hydra_utils
    except ImportError:  # pragma: no cover - a Hydra without it: its own reporting, exit 1
        yield
        return
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:  # pragma: no cover
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        return original(lambda: _report_user_error(func))

    global _CLI
    hydra_utils.run_and_report = run_and_report
    _CLI = True
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
        _CLI = False


_CLI = False  # True while `main()` runs Hydra's command line (not for API callers of run_from_hydra)


def _report_user_error(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception as e:
        e = _as_storage_error(e)
        lines = user_error_lines(e)
        if lines is None:  # not bad input: still one line, never a traceback unless HYDRA_FULL_ERROR=1
            from llem.faults import exit_one_line

            exit_one_line(e)
        _exit_user_error(e, lines)


def _exit_user_error(e: BaseException, lines: list[str]) -> None:
    """`llem: <problem>` per line on stderr, then exit 2 (the error's `exit_code`)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(e)
    result_file = getattr(e, "result_file", None)
    if result_file:
        lines[-1] += f" (result.json with status failed: {result_file})"
    for line in lines:
        print(f"llem: {line}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(getattr(e, "exit_code", 2)) from None


def _as_storage_error(e: Exception) -> Exception:
    """A full disk or read-only folder met by Hydra's own writes (`.hydra/`, `multirun.yaml`) becomes
    llem's StorageError: one line with the folder and its free space, exit code 4, as for llem's files."""
    from llem.io import StorageError, storage_reason

    if not isinstance(e, OSError) and not isinstance(e, StorageError):  # logging's "Unable to configure
        cause = e.__cause__ or e.__context__  # handler 'file'" (a ValueError) over a read-only run dir
        if isinstance(cause, OSError) and storage_reason(cause) is not None:
            e = cause
    if not isinstance(e, OSError) or isinstance(e, StorageError) or storage_reason(e) is None:
        return e
    return StorageError(e.filename or _hydra_output_dir(e) or os.getcwd(), e)


def _hydra_output_dir(e: BaseException) -> str | None:
    """The folder Hydra was writing to when `e` was raised: its `_save_config(..., output_dir)` frame
    (Hydra has already dropped its job config by the time the error reaches us)."""
    where = None
    for frame, _ in traceback.walk_tb(e.__traceback__):
        value = frame.f_locals.get("output_dir")
        if isinstance(value, (str, os.PathLike)):
            where = os.path.abspath(value)
    return where


def user_error_lines(e: BaseException) -> list[str] | None:
    """One line per problem when `e` is bad input (llem's UserError, or Hydra's word on what the user
    wrote), else None (a bug: keep the traceback)."""
    import yaml
    from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if isinstance(e, UserError):
        return [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    if isinstance(e, yaml.YAMLError):
        return [_yaml_problem(e)]
    if isinstance(e, MissingConfigException):
        return [_missing_config(e)]
    if isinstance(e, RuntimeError):  # a config naming a Hydra plugin that is not installed
        from llem.extras import plugin_class_message

        line = plugin_class_message(str(e))
        if line:
            return [line]
    if isinstance(e, CompactHydraException) and not isinstance(e, InstantiationException):
        cause = e.__cause__ or e.__context__
        if isinstance(cause, yaml.YAMLError):
            return [_yaml_problem(cause)]
        if isinstance(cause, OmegaConfBaseException):
            where = re.match(r"In '([^']+)'", str(e))  # a config file's value, not an override
            prefix = f"in config '{where.group(1)}': " if where else ""
            if isinstance(cause, ConfigKeyError) and getattr(cause, "full_key", None):
                from llem.config.overrides import unknown_key

                problem = unknown_key(str(cause.full_key))
                if problem:
                    return [prefix + problem]
            key, value, allowed = _omegaconf_problem(cause, str(e))
            return [f"{prefix}{key}={value} is invalid: allowed {allowed}"]
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        override = getattr(e, "override", None)
        if override:  # OverrideParseException: the line as typed
            text = f"cannot parse override '{override}': {text}"
        return [text]
    return None


def _yaml_problem(e: Any) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    return f"YAML error in {where}: {what} (allowed: valid YAML, https://yaml.org/spec/1.2.2/)"


def _missing_config(e: Any) -> str:
    """`model=qwen`: Hydra names the missing `model/qwen` and lists the group's options."""
    from llem.config.overrides import group_hint

    missing = str(getattr(e, "missing_cfg_file", None) or "")
    options = [str(o) for o in (getattr(e, "options", None) or [])]
    if "/" in missing and options:
        group, _, value = missing.rpartition("/")
        from llem.extras import group_hint as extra_hint

        return (f"{group}={value}: no such option in config group '{group}'.{group_hint(value, options)} "
                f"Allowed: {', '.join(options)}{extra_hint(group, value)}")
    from llem.extras import missing_config_hint

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = f"{first} (missing config '{missing}')" if missing and missing not in first else first
    hint = missing_config_hint(missing)
    return first.rstrip(".") + hint if hint else first


_VALUE = re.compile(r"(?:Invalid value|Value) '(.*?)'")


def _omegaconf_problem(e: Any, context: str = "") -> tuple[str, str, str]:
    """(key, value, allowed) of an OmegaConf type/resolution error, with the schema's word on the key."""
    from omegaconf.errors import InterpolationResolutionError

    from llem.config.overrides import allowed_for, close_value, field_type

    key = str(getattr(e, "full_key", None) or "") or "config"
    msg = str(getattr(e, "msg", None) or e).strip().splitlines()
    first = msg[0] if msg else type(e).__name__
    merged = re.match(r"Error merging override (.*)", context)
    if merged and "=" in merged.group(1):  # the override as typed: its key and value
        key, value = merged.group(1).split("=", 1)
        key = key.lstrip("+~")
    else:
        found = _VALUE.search(first)
        node = getattr(e, "child_node", None)
        value = found.group(1) if found else str(node._value()) if node is not None else "?"
        if isinstance(e, InterpolationResolutionError):  # `${oc.env:X}` and the like
            return key, value, f"a value that resolves ({first})"
    tp = field_type(key)
    allowed = allowed_for(tp) if tp is not None else None
    if allowed and allowed.startswith("one of "):
        hint = close_value(value, allowed[len("one of "):].split(", "))
        allowed += f" (case matters: did you mean '{hint}'?)" if hint else " (case matters)"
    return key, value, allowed or first
