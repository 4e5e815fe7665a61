"""One measured job, in order: environment → model load (timed) → warmup → window → result.

This is the whole measured path of llem; `MeasurementWindow` (llem/measure/window.py) brackets the
only code whose time and energy are reported, and `Result` (llem/result.py) is what lands on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llem import __version__
from llem.backends.base import Backend, RunOutput, Workload, make_backend
from llem.config.preflight import before_load
from llem.config.schema import BACKENDS, ExperimentConfig
from llem.config.validate import validate
from llem.datasets import load_prompts, needs_tokenizer
from llem.device import use_pci_order
from llem.energy import build_meters
from llem.energy.baseline import baseline_for, context_baseline
from llem.energy.block import energy_block
from llem.energy.thermal import warmup_for
from llem.env import snapshot
from llem.io import atomic_write_json, atomic_write_text
from llem.measure.latency import latency_block
from llem.measure.stats import cv
from llem.measure.window import MeasurementWindow
from llem.models import identity_fields
from llem.result import REQUESTS_FILE, RESULT_FILE, TIMESERIES_FILE, Result, flops_block, now_iso
from llem.study.jobfiles import set_aside_torn

if TYPE_CHECKING:
    from llem.serving.metrics import RequestColumns


def inject_fault(cfg: ExperimentConfig) -> None:
    """Test-only failures (`debug.fault=...`) so launcher tests exercise real crashes."""
    fault = cfg.debug.fault
    if fault == "raise":
        raise RuntimeError("debug.fault=raise: injected failure")
    if fault == "exit":
        os._exit(cfg.debug.exit_code)
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "sleep":
        time.sleep(cfg.debug.sleep_s)


def warmup(backend: Backend, workload: Workload, cfg: ExperimentConfig) -> list[float]:
    """Fixed count, or until the CV of the last `cv_window` latencies < cv_threshold (bounded)."""
    w = cfg.warmup
    latencies: list[float] = []
    if cfg.scenario.name == "serving":  # one unit = scenario.warmup_requests requests through the scheduler
        return [backend.warmup_step(workload)] if cfg.scenario.warmup_requests else []
    limit = w.n_batches if w.mode == "fixed" else w.max_batches
    while len(latencies) < limit:
        latencies.append(backend.warmup_step(workload))
        if w.mode == "cv" and len(latencies) >= max(w.n_batches, w.cv_window):
            if cv(latencies[-w.cv_window :]) < w.cv_threshold:
                break
    return latencies


def _workload_block(cfg: ExperimentConfig, workload: Workload, out: RunOutput) -> dict[str, Any]:
    n_in = sum(r.input_tokens for r in out.records)
    n_out = sum(r.output_tokens for r in out.records)
    n = len(out.records)
    spec = BACKENDS[cfg.backend]  # the registry names each backend's batch / token-limit knobs
    section = getattr(cfg, cfg.backend)

    def knob(name: str | None) -> Any:
        return getattr(section, name, None) if name else None

    continuous = workload.batch_size == 0  # the engine schedules: its batch cap is the batch knob
    return {
        "prompts": n,
        "batch_size": knob(spec.batch_knob) if continuous else workload.batch_size,
        "batching": "continuous" if continuous else "static",
        "scenario": cfg.scenario.name,
        "input_tokens": n_in,
        "output_tokens": n_out,
        "input_tokens_mean": n_in / n if n else None,
        "output_tokens_mean": n_out / n if n else None,
        "truncated_prompts": workload.truncated,
        "max_input_tokens": knob(spec.input_tokens_knob),
        "max_output_tokens": knob(spec.output_tokens_knob),
        "dataset": cfg.dataset.name,
    }


def _write_side_files(out_dir: Path, cfg: ExperimentConfig, out: RunOutput, readings: list[Any],
                      request_extra: dict[int, RequestColumns] | None = None) -> list[str]:
    written = []
    extra = request_extra or {}
    if cfg.save_requests:
        lines = "".join(json.dumps({**r.as_row(), **(extra[r.index].as_dict() if r.index in extra else {})}) + "\n"
                        for r in sorted(out.records, key=lambda r: r.index))
        atomic_write_text(out_dir / REQUESTS_FILE, lines)
        written.append(REQUESTS_FILE)
    rows = [row for r in readings if r.timeseries for row in r.timeseries]
    if rows:
        import pandas as pd

        tmp = out_dir / f".{TIMESERIES_FILE}.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, out_dir / TIMESERIES_FILE)
        written.append(TIMESERIES_FILE)
    return written


def run_job(cfg: ExperimentConfig, out_dir: Path, resolved: dict[str, Any], overrides: list[str],
            config_hash: str) -> Result:
    """Run one measured job and write result.json (also when it fails); returns the result."""
    t_job = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Result(llem_version=__version__, config=resolved)
    result.identity = {
        "config_hash": config_hash,
        "study_design_hash": cfg.study_job.study_design_hash,
        "cycle": cfg.study_job.cycle,
        "job_index": cfg.study_job.index,
        "overrides": overrides,
        "backend": cfg.backend,
        "model": cfg.model.id,
        "model_revision": cfg.model.revision,
        "dataset": cfg.dataset.name,
        "precision": cfg.precision.value,
        "pid": os.getpid(),
        "job_dir": str(out_dir),
    }
    set_aside_torn(out_dir)  # a torn result of an earlier run here is kept as result.json.torn-<time>
    atomic_write_json(out_dir / RESULT_FILE, result.as_dict())  # status=running: the job has begun
    backend: Backend | None = None
    selection = None
    from llem.gpu.job import JobSettings

    gpu = JobSettings()  # gpu.*: applied before load (here or by the launcher), restored in `finally`
    try:
        use_pci_order()  # before CUDA starts: CUDA numbers GPUs as NVML does, unless the user chose an order
        validate(cfg)
        # the model (id, revision, tokenizer folder, device, config.json, Hub reachable, or the outside
        # server: exit 2 before meters, baseline and load), then the dataset, then
        # prompt + output within the model's context; both a model and a dataset problem are reported
        prompts = before_load(cfg, lambda: None if needs_tokenizer(cfg.dataset) else
                              load_prompts(cfg.dataset, cfg.n, cfg.seed))
        result.warnings.extend(gpu.begin(cfg, f"llem job {out_dir}"))
        result.environment = snapshot()
        if os.environ.get("LLEM_HEALTH"):  # GPU health seen by llem's launcher before this job
            result.environment["health"] = json.loads(os.environ["LLEM_HEALTH"])
        inject_fault(cfg)
        selection = build_meters(cfg.energy)
        baseline = baseline_for(selection.meters, cfg.energy, cfg.model.cache_dir)  # idle power, before model load
        backend = make_backend(cfg)
        backend.job_dir = out_dir  # where a backend keeps side files (openai: the managed server's server.log)
        if backend.sources is not None:  # what loads: path, pinned Hub commit, tokenizer
            result.identity.update(identity_fields(backend.sources))
        t0 = time.perf_counter()
        backend.load()
        load_s = time.perf_counter() - t0
        if backend.sources is not None:  # again: a Hub snapshot folder exists once downloaded
            result.identity.update(identity_fields(backend.sources))
        for m in selection.meters:  # now the model is loaded: which GPUs run this job's processes (nvml)
            m.attribute()
        baseline = context_baseline(selection.meters, cfg.energy, baseline)  # GPU idle with the job's context
        if prompts is None:
            prompts = load_prompts(cfg.dataset, cfg.n, cfg.seed, getattr(backend, "tokenizer", None))
        workload = backend.prepare(prompts)
        t0 = time.perf_counter()
        warm = warmup(backend, workload, cfg)
        warmup_s = time.perf_counter() - t0
        e = cfg.energy  # thermal warmup (off by default): more warmup steps until GPU temperature settles
        thermal = warmup_for(selection.meters, lambda: backend.warmup_step(workload), e.thermal_warmup_s,
                             e.thermal_plateau_s, e.thermal_tolerance_c)

        with MeasurementWindow(selection.meters, sync=backend.sync) as window:
            out = backend.run(workload)

        # Serving: headline figures (workload, throughput, latency) from succeeded requests only; the failed
        # ones are counted and listed by reason in result.serving.requests (llem/serving/metrics.py).
        head = out if cfg.scenario.name != "serving" else dataclasses.replace(
            out, records=[r for r in out.records if r.succeeded])
        result.workload = _workload_block(cfg, workload, head)
        compiled = backend.compile_report()  # shapes warmed, recompiles in window
        if compiled:
            result.workload["compile"] = compiled
            result.warnings.extend(compiled["warnings"])
        n_out = result.workload["output_tokens"]
        n_in = result.workload["input_tokens"]
        n_req = result.workload["prompts"]
        win = window.duration_s
        result.timing = {"load_s": load_s, "warmup_s": warmup_s, "warmup_batches": len(warm),
                         "warmup_latencies_s": warm, "window_s": win, "window_start_unix_s": window.wall_start}
        result.throughput = {"output_tok_s": n_out / win, "total_tok_s": (n_in + n_out) / win,
                             "requests_s": n_req / win}
        if out.steady_state:  # vLLM: the span with a full batch (ML.ENERGY method), beside the whole window
            result.throughput["steady_state"] = out.steady_state.throughput()
        if out.engine:
            result.workload["engine"] = out.engine.as_dict()
        result.latency = latency_block(head.records)
        result.warnings.extend(note for note in (out.latency_note, out.steady_state_note) if note)
        facts = backend.model_facts()
        result.model = facts.as_dict()
        if facts.warning:
            result.warnings.append(facts.warning)
        result.flops = flops_block(facts.non_embedding_parameters, n_in, n_out)
        result.energy = energy_block(window.readings, selection.notes, win, n_out, n_req,
                                     result.flops.get("total_flop"), input_tokens=n_in,
                                     window_span=(window.t_start, window.t_end), phases=out.phases,
                                     steady_state=out.steady_state, baseline=baseline,
                                     thermal_warmup=thermal, basis=cfg.energy.basis)
        result.warnings.extend(result.energy.get("warnings", []))
        gpu.seen(window.readings)
        request_extra = None
        if cfg.scenario.name == "serving":  # rate, SLO, goodput, steady state, per-request energy (README "Serving")
            from llem.serving.metrics import serving_block

            result.serving, request_extra = serving_block(out.records, window.t_start, window.t_end, cfg.scenario,
                                                          window.readings, result.energy, out.serving)
            if result.serving["steady_state_note"]:
                result.warnings.append(result.serving["steady_state_note"])
        result.memory = backend.memory().as_dict()
        result.environment["gpus"] = [d.as_dict() for d in backend.devices()]
        torch = sys.modules.get("torch")  # the CUDA version torch was built for (None: CPU build)
        result.environment["torch_cuda_version"] = getattr(getattr(torch, "version", None), "cuda", None)
        result.identity["files"] = _write_side_files(out_dir, cfg, out, window.readings, request_extra)
        result.status = "completed"
    except KeyboardInterrupt as e:
        result.fail(e, status="interrupted")
        raise
    except Exception as e:
        result.fail(e)
        raise
    finally:
        result.warnings.extend(gpu.end())
        result.gpu_settings = gpu.block
        result.finished_at = now_iso()
        result.timing["job_s"] = time.perf_counter() - t_job
        atomic_write_json(out_dir / RESULT_FILE, result.as_dict())
        if selection is not None:
            for meter in selection.meters:
                meter.close()
        if backend is not None:
            backend.close()
    return result
