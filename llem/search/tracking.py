"""`tracking=mlflow`: every job an MLflow run, nested under one run per study (a Hydra callback).

Hydra calls the callback under any launcher: `on_multirun_start` (the sweep's process) opens the study's
parent run and leaves its id in `<sweep>/.mlflow_parent.json`; `on_job_end` (wherever the job runs: llem's
fresh process, joblib's worker, this process) logs the job's run from its result.json; `on_multirun_end`
logs the jobs that died before their callback ran (a crash; llem's launcher wrote their result.json),
attaches the report's plots to the parent run and closes it. A single run (`python -m llem ...`) is one
run without a parent. Nothing here runs inside the measurement window.

Logged per job: params = the job's overrides (`override.<key>`) and resolved key settings; metrics =
throughput, TTFT / TPOT (per-request mean ITL) / ITL (per step) / e2e p50 and p90, J/output token and
J/request when measured, serving goodput and rate, the objective values; tags = config_hash,
study_design_hash, cycle, status, job index; artifact = result.json. Never a secret: the value of a
`*_env` key (it names a variable), the value of any variable so named, and values of keys called
*api_key / *password / *secret / *token are replaced by `***` everywhere, artifacts included.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llem.search.objective import lookup

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency of llem
    Callback = object  # type: ignore[assignment,misc]

PARENT_FILE = ".mlflow_parent.json"
RUN_FILE = ".mlflow_run.json"
DB_FILE = "mlflow.db"
ARTIFACT_DIR = ".mlflow-artifacts"  # hidden: llem.results.load does not read the result.json copies in it
REDACTED = "***"
SENSITIVE_KEY = re.compile(r"(^|[._])(api_?key|password|passwd|secret|token|credentials?)$", re.IGNORECASE)
URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")
KEY_SETTINGS = ("backend", "model.id", "model.revision", "precision", "n", "seed", "dataset.name",
                "scenario.name", "scenario.request_rate", "energy.meter")
METRICS = {
    "throughput.output_tok_s": "throughput.output_tok_s", "throughput.total_tok_s": "throughput.total_tok_s",
    "throughput.requests_s": "throughput.requests_s",
    **{f"latency.{src}.{q}": f"latency.{name}.{q}" for src, name in (
        ("ttft_s", "ttft_s"), ("itl_request_mean_s", "tpot_s"), ("itl_step_s", "itl_s"), ("e2e_s", "e2e_s"))
       for q in ("p50", "p90")},
    "energy.j_per_output_token": "energy.j_per_output_token", "energy.j_per_request": "energy.j_per_request",
    "energy.energy_j": "energy.energy_j",
    "serving.slo.goodput_rate_s": "serving.goodput_rate_s", "serving.slo.fraction": "serving.slo_fraction",
    "serving.achieved_rate_s": "serving.achieved_rate_s",
    "serving.energy.j_per_request": "serving.j_per_request",
    **{f"serving.latency.{k}.{q}": f"serving.{k}.{q}" for k in ("ttft_s", "itl_s", "e2e_s") for q in ("p50", "p90")},
}


# -- secrets --------------------------------------------------------------------------------------------
def secrets_of(config: Any, environ: Mapping[str, str] | None = None) -> set[str]:
    """Strings that must never be logged: every `*_env` key's value (a variable's name), that variable's
    value, and the values of sensitive keys (api_key, password, secret, token)."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and node:
            if key.endswith("_env"):
                found.add(node)
                if environ.get(node):
                    found.add(environ[node])
            elif SENSITIVE_KEY.search(key):
                found.add(node)

    walk(config)
    return {s for s in found if len(s) >= 3}


def scrub(value: Any, secrets: Iterable[str], key: str = "") -> Any:
    """`value` with every secret replaced by *** (recursively; sensitive keys' values always)."""
    secrets = tuple(secrets)
    if isinstance(value, Mapping):
        return {k: scrub(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets, key) for v in value]
    if isinstance(value, str):
        if (key.endswith("_env") or SENSITIVE_KEY.search(key)) and value:
            return REDACTED
        for s in secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        value = URL_USERINFO.sub(r"\1" + REDACTED + "@", value)  # http://user:token@host → http://***@host
    return value


# -- what a job logs ------------------------------------------------------------------------------------
def _number(v: Any) -> float | None:
    import math

    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def job_params(result: Mapping[str, Any], secrets: Iterable[str]) -> dict[str, str]:
    from llem.results import BOOKKEEPING_OVERRIDES, parse_override

    ident = result.get("identity") or {}
    config = result.get("config") or {}
    params: dict[str, Any] = {}
    for text in ident.get("overrides") or ():
        key, value = parse_override(str(text))
        if not key.startswith(BOOKKEEPING_OVERRIDES) or key.startswith("study.objective"):
            params[f"override.{key}"] = value
    for key in KEY_SETTINGS:
        params[key] = lookup(config, key)
    backend = config.get("backend")
    section = config.get(backend) if isinstance(backend, str) else None
    if isinstance(section, Mapping):
        for k, v in section.items():
            if not isinstance(v, (Mapping, list)):
                params[f"{backend}.{k}"] = v
    clean = scrub(params, secrets)
    return {k: str(v)[:500] for k, v in clean.items() if v is not None}


def job_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    out = {name: _number(lookup(result, src)) for src, name in METRICS.items()}
    if (result.get("energy") or {}).get("measured") is not True:  # J figures only when measured
        out = {k: v for k, v in out.items() if not (k.startswith("energy.") or k == "serving.j_per_request")}
    objective = result.get("objective") or {}
    for field, value in zip(objective.get("fields") or (), objective.get("values") or ()):
        out[f"objective.{field}"] = _number(value)
    return {k: v for k, v in out.items() if v is not None}


def job_tags(result: Mapping[str, Any], job_dir: Path) -> dict[str, str]:
    ident = result.get("identity") or {}
    tags = {"llem.config_hash": ident.get("config_hash"), "llem.study_design_hash": ident.get("study_design_hash"),
            "llem.cycle": ident.get("cycle"), "llem.status": result.get("status"), "llem.job_index": ident.get("job_index"),
            "llem.job_dir": str(job_dir), "llem.objective_status": (result.get("objective") or {}).get("status")}
    return {k: str(v) for k, v in tags.items() if v is not None}


# -- MLflow ---------------------------------------------------------------------------------------------
def tracking_uri(config: Any, folder: Path) -> str:
    uri = lookup(config, "tracking.uri")
    return str(uri) if uri else f"sqlite:///{(folder / DB_FILE).absolute()}"


def experiment_name(config: Any) -> str:
    name = lookup(config, "tracking.experiment")
    if name:
        return str(name)
    choice = lookup(config, "hydra.runtime.choices.experiment")
    return f"llem/{choice}" if choice else "llem"


def _client(uri: str, experiment: str) -> tuple[Any, str]:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the sqlite store's migrations, once
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # mlflow sets its own level on import: quiet again after it
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return client, exp.experiment_id
    location = None  # an sqlite store keeps its artifacts beside it (MLflow's default: ./mlruns of the cwd)
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / ARTIFACT_DIR).absolute().as_uri()
    return client, client.create_experiment(experiment, artifact_location=location)


def log_job(uri: str, experiment: str, job_dir: Path, parent_id: str | None, secrets: Iterable[str],
            name: str | None = None) -> str | None:
    """One MLflow run for the job in `job_dir` (from its result.json); its run id (None: no result)."""
    try:
        result = json.loads((job_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict):  # a torn result.json: nothing to log
        return None
    secrets = set(secrets) | secrets_of(result.get("config") or {})
    client, exp_id = _client(uri, experiment)
    tags = job_tags(result, job_dir)
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    ident = result.get("identity") or {}
    run_name = name or (f"job {ident.get('job_index')}" if ident.get("job_index") is not None else job_dir.name)
    run = client.create_run(exp_id, tags=tags, run_name=run_name)
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    ts = _ms(result.get("finished_at"))
    client.log_batch(rid, metrics=[Metric(k, v, ts, 0) for k, v in job_metrics(result).items()],
                     params=[Param(k, v) for k, v in job_params(result, secrets).items()])
    with tempfile.TemporaryDirectory(prefix="llem-mlflow-") as tmp:  # the artifact, scrubbed
        copy = Path(tmp) / "result.json"
        copy.write_text(json.dumps(scrub(result, secrets), indent=1, default=str), encoding="utf-8")
        client.log_artifact(rid, str(copy))
    client.set_terminated(rid, "FINISHED" if result.get("status") == "completed" else "FAILED")
    _write(job_dir / RUN_FILE, {"run_id": rid, "uri": uri})
    return rid


def _ms(iso: Any) -> int:
    import datetime as dt
    import time

    try:
        return int(dt.datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(time.time() * 1000)


def _write(path: Path, data: dict[str, Any]) -> None:
    from llem.io import atomic_write_json

    with contextlib.suppress(Exception):
        atomic_write_json(path, data)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log_report(uri: str, run_id: str, folder: Path) -> None:
    """The report's plots and page (python -m llem.report) as artifacts of `run_id`."""
    from mlflow.tracking import MlflowClient

    from llem.report import build_report

    rep = build_report(folder)
    client = MlflowClient(tracking_uri=uri)
    for f in rep.files:
        if Path(f).suffix in (".png", ".md"):
            client.log_artifact(run_id, str(f), artifact_path="report")


def _warn(what: str, e: BaseException) -> None:
    print(f"llem: tracking=mlflow: {what}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


class MlflowCallback(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback of `tracking=mlflow` (conf/tracking/mlflow.yaml). Tracking never fails a job or a study:
    an MLflow error is one `llem:` warning line."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        import atexit

        sweep = Path(str(config.hydra.sweep.dir))
        try:
            sweep.mkdir(parents=True, exist_ok=True)
            uri, experiment = tracking_uri(config, sweep), experiment_name(config)
            client, exp_id = _client(uri, experiment)
            old = _read(sweep / PARENT_FILE)
            if old and old.get("uri") == uri:  # study.resume: the same parent run
                client.update_run(old["run_id"], status="RUNNING")
            else:
                run = client.create_run(exp_id, run_name=f"study {sweep.name}",
                                        tags={"llem.sweep_dir": str(sweep.absolute()), "llem.kind": "study"})
                _write(sweep / PARENT_FILE, {"run_id": run.info.run_id, "uri": uri, "experiment": experiment})
        except Exception as e:
            _warn("parent run not created", e)
            return
        # Hydra calls on_multirun_end only when the sweep returns; a failed study (StudyFailed, exit 1) or
        # Ctrl-C does not: the study's run is then closed at exit, by this process only (not a forked job).
        self._pending = (str(sweep), experiment, os.getpid())
        atexit.register(self._close_study)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        try:
            job_dir = Path(str(config.hydra.runtime.output_dir))
            sweep = Path(str(config.hydra.sweep.dir))
            multirun = str(OmegaConf.select(config, "hydra.mode", default="")).endswith("MULTIRUN") or (
                sweep / PARENT_FILE).is_file()  # Hydra's API multirun leaves hydra.mode unset
            folder = sweep if multirun else job_dir
            parent = _read(sweep / PARENT_FILE) if multirun else None
            uri = tracking_uri(config, folder)
            resolved = OmegaConf.to_container(config, resolve=False)
            log_job(uri, experiment_name(config), job_dir, (parent or {}).get("run_id"), secrets_of(resolved))
        except Exception as e:
            _warn("job run not logged", e)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        try:
            job_dir = Path(str(config.hydra.runtime.output_dir))
            run = _read(job_dir / RUN_FILE)
            if run:
                log_report(run["uri"], run["run_id"], job_dir)
        except Exception as e:
            _warn("report not attached", e)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._close_study()

    def _close_study(self) -> None:
        """Log the jobs that died before their callback ran, attach the report, close the study's run
        (FINISHED, or FAILED when the manifest says the study failed). Once, in the sweep's process."""
        import atexit

        pending = getattr(self, "_pending", None)
        if not pending or pending[2] != os.getpid():
            return
        self._pending = None
        atexit.unregister(self._close_study)
        sweep, experiment = Path(pending[0]), pending[1]
        parent = _read(sweep / PARENT_FILE)
        if not parent:
            return
        try:
            from mlflow.tracking import MlflowClient

            from llem.results import find_result_files

            uri = parent["uri"]
            for path in find_result_files(sweep) if sweep.is_dir() else []:
                job_dir = Path(path).parent
                if not (job_dir / RUN_FILE).exists():  # died before its callback (crash, timeout, kill)
                    log_job(uri, parent.get("experiment") or experiment, job_dir, parent["run_id"], ())
            try:
                log_report(uri, parent["run_id"], sweep)
            except Exception as e:
                _warn("report not attached", e)
            status = (_read(sweep / "manifest.json") or {}).get("status")
            MlflowClient(tracking_uri=uri).set_terminated(
                parent["run_id"], "FAILED" if status == "failed" else "KILLED" if status == "interrupted" else "FINISHED")
        except Exception as e:
            _warn("study run not closed", e)
