"""Schema-complete example results with chosen figures, built by the same code a real job uses.

Tests, `scripts/bench_results.py` and anyone trying `python -m llem.report` without a GPU use these:
`Result`, `latency_block`, `energy_block` and `flops_block` make every block, so an example file
has exactly the keys and units of a real `result.json`; only the numbers are chosen.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llem.config.schema import ExperimentConfig, PytorchConfig, VllmConfig
from llem.energy.base import DeviceEnergy, EnergyReading
from llem.energy.block import energy_block
from llem.io import atomic_write_json, atomic_write_text
from llem.measure.latency import RequestRecord, latency_block
from llem.result import REQUESTS_FILE, RESULT_FILE, TIMESERIES_FILE, Result, flops_block
from llem.study import hashing
from llem.study import manifest as manifest_mod

NON_EMBEDDING_PARAMETERS = 100_096


def _records(n: int, batch_size: int, input_tokens: int, output_tokens: int, ttft_s: float, itl_s: float,
             rng: random.Random) -> list[RequestRecord]:
    records, t = [], 100.0
    for b in range(0, n, batch_size):
        batch = list(range(b, min(n, b + batch_size)))
        first = t + ttft_s * rng.uniform(0.9, 1.1)
        steps = [first + itl_s * k * rng.uniform(0.95, 1.05) for k in range(output_tokens)]
        for i in batch:
            records.append(RequestRecord(i, input_tokens, output_tokens, t, first, steps[-1], b // batch_size,
                                         steps))
        t = steps[-1]
    return records


def example_result(*, overrides: list[str], config_hash: str | None = None, cycle: int = 0, output_tok_s: float = 500.0,
                   j_per_output_token: float | None = None, ttft_s: float = 0.004, itl_s: float = 0.001,
                   status: str = "completed", error: dict[str, Any] | None = None,
                   study_design_hash: str | None = None, job_index: int | None = None, job_dir: str = "",
                   backend: str = "pytorch", batch_size: int = 1, n: int = 8, input_tokens: int = 64,
                   output_tokens: int = 8, precision: str = "fp32", seed: int = 0,
                   with_records: bool = False) -> tuple[dict[str, Any], list[RequestRecord]]:
    """A result dict whose throughput, J/token and latencies are the given ones (latencies ±10 %).

    `config_hash` defaults to the real hash (llem.study.hashing) of the example's resolved config.
    """
    config = asdict(ExperimentConfig(backend=backend, n=n))
    section = asdict(PytorchConfig() if backend == "pytorch" else VllmConfig())
    section.update({"batch_size": batch_size, "max_output_tokens": output_tokens} if backend == "pytorch"
                   else {"max_num_seqs": batch_size, "max_tokens": output_tokens})
    config.update({backend: section, "precision": precision})
    config = json.loads(json.dumps(config, default=str))
    config_hash = config_hash or hashing.config_hash(config)
    config["study_job"].update(cycle=cycle, config_hash=config_hash, study_design_hash=study_design_hash,
                               index=job_index)
    rng = random.Random(f"{config_hash}:{cycle}:{seed}")
    result = Result(status="running", llem_version="0.1.0", config=config)
    result.identity = {"config_hash": config_hash, "study_design_hash": study_design_hash, "cycle": cycle,
                       "job_index": job_index, "overrides": list(overrides), "backend": backend,
                       "model": "llem/tiny-gpt2", "model_revision": None, "dataset": "synthetic",
                       "precision": precision, "pid": 1, "job_dir": job_dir, "files": []}
    records: list[RequestRecord] = []
    if status == "completed":
        records = _records(n, batch_size, input_tokens, output_tokens, ttft_s, itl_s, rng)
        n_out, n_in = n * output_tokens, n * input_tokens
        window_s = n_out / output_tok_s
        result.workload = {"prompts": n, "batch_size": batch_size, "input_tokens": n_in, "output_tokens": n_out,
                           "input_tokens_mean": float(input_tokens), "output_tokens_mean": float(output_tokens),
                           "truncated_prompts": 0, "max_input_tokens": 512, "max_output_tokens": output_tokens,
                           "dataset": "synthetic"}
        result.timing = {"load_s": 0.2, "warmup_s": 0.05, "warmup_batches": 2, "warmup_latencies_s": [0.03, 0.02],
                         "window_s": window_s, "window_start_unix_s": 1.8e9 + 60 * (job_index or 0),
                         "job_s": 3.0 + window_s}
        result.throughput = {"output_tok_s": output_tok_s, "total_tok_s": (n_in + n_out) / window_s,
                             "requests_s": n / window_s}
        result.latency = latency_block(records)
        result.flops = flops_block(NON_EMBEDDING_PARAMETERS, n_in, n_out)
        if j_per_output_token is None:
            readings = [EnergyReading("none", False, window_s, reason="energy measurement disabled")]
        else:
            readings = [EnergyReading("nvml", True, window_s, devices=[
                DeviceEnergy("gpu:0", "gpu", j_per_output_token * n_out, "nvml_counter")])]
        result.energy = energy_block(readings, [], window_s, n_out, n, result.flops.get("total_flop"))
        result.model = {"parameters": 203_776, "non_embedding_parameters": NON_EMBEDDING_PARAMETERS,
                        "dtype": "float32", "device": "cpu", "architecture": "GPT2LMHeadModel"}
        result.memory = {"peak_rss_bytes": 450_000_000}
        result.environment = {"host": "example", "cpu_count": 2, "packages": {"torch": "2.13.0"}, "gpus": []}
        result.status = "completed"
    else:
        result.status = status
        result.error = error or {"type": "RuntimeError", "message": "example failure", "traceback": None}
    result.finished_at = result.started_at
    return result.as_dict(), records if with_records else []


def write_example_job(job_dir: str | os.PathLike[str], *, requests: bool = False,
                      timeseries: dict[str, list[float]] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Write result.json (+ requests.jsonl, + timeseries.parquet from column lists) into `job_dir`."""
    job_dir = Path(job_dir)
    result, records = example_result(job_dir=str(job_dir), with_records=requests, **kwargs)
    if records:
        atomic_write_text(job_dir / REQUESTS_FILE, "".join(json.dumps(r.as_row()) + "\n" for r in records))
        result["identity"]["files"].append(REQUESTS_FILE)
    if timeseries:
        import pandas as pd

        job_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(timeseries).to_parquet(job_dir / TIMESERIES_FILE, index=False)
        result["identity"]["files"].append(TIMESERIES_FILE)
    atomic_write_json(job_dir / RESULT_FILE, result)
    return result


def _power_series(window_s: float, power_w: float, rng: random.Random) -> dict[str, list[Any]]:
    """10 Hz samples from 0.5 s before to 0.3 s after the window: power ramps up, temperature climbs."""
    rows: dict[str, list[Any]] = {"t_s": [], "elapsed_s": [], "meter": [], "device": [], "kind": [],
                                  "power_w": [], "temperature_c": []}
    steps = int((window_s + 0.8) * 10) + 1
    for k in range(steps):
        t = -0.5 + k * 0.1
        inside = 0.0 <= t <= window_s
        p = (power_w * min(1.0, 0.4 + t / 2.0) if inside else 60.0) * rng.uniform(0.97, 1.03)
        rows["t_s"].append(5000.0 + t)
        rows["elapsed_s"].append(t)
        rows["meter"].append("nvml")
        rows["device"].append("gpu:0")
        rows["kind"].append("gpu")
        rows["power_w"].append(p)
        rows["temperature_c"].append(45.0 + 15.0 * max(0.0, min(t, window_s)) / max(window_s, 1e-9)
                                     + rng.uniform(-0.3, 0.3))
    return rows


def write_example_study(sweep_dir: str | os.PathLike[str], *, cycles: int = 3, energy: bool = True,
                        speed: float = 1.0, precision: str = "fp32", failed: bool = True,
                        skipped: bool = True, timeseries: bool = True, noisy_batch: int | None = 16,
                        n: int = 16, output_tokens: int = 32) -> list[dict[str, Any]]:
    """A study folder like the sweeper's: pytorch batch 1..16 and vLLM max_num_seqs 8..128, `cycles`
    cycles interleaved, manifest.json, requests.jsonl per job, one timeseries.parquet.

    Figures follow smooth curves (throughput up and J/token down with batch size) with 2 % noise per
    cycle, 10 % for `noisy_batch` (an unstable config); `speed` scales throughput (J/token ÷ speed).
    The job of pytorch batch 4 in the last cycle fails (`failed`); `pytorch.batch_size=0` is skipped.
    """
    sweep_dir = Path(sweep_dir)
    configs = [("pytorch", b, [f"pytorch.batch_size={b}"]) for b in (1, 2, 4, 8, 16)]
    configs += [("vllm", s, ["backend=vllm", f"vllm.max_num_seqs={s}"]) for s in (8, 32, 128)]
    if precision != "fp32":
        configs = [(be, b, [*ov, f"precision={precision}"]) for be, b, ov in configs]
    rng = random.Random(f"llem-example:{precision}:{speed}")
    hashes = [example_result(overrides=ov, backend=be, batch_size=b, precision=precision, n=n,
                             output_tokens=output_tokens)[0]["identity"]["config_hash"] for be, b, ov in configs]
    design = hashing.design_hash(hashes)
    results, entries = [], []
    for cycle in range(cycles):
        for (backend, b, overrides), chash in zip(configs, hashes):
            index = len(entries)
            noise = 0.10 if b == noisy_batch and backend == "pytorch" else 0.02
            f = max(0.5, rng.gauss(1.0, noise))
            if backend == "pytorch":
                tok_s, jpt = 120.0 * b**0.85, 0.9 * b**-0.6 + 0.05
                ttft, itl = 0.010 * (1 + 0.15 * b), 0.020 * (1 + 0.03 * b)
            else:
                tok_s, jpt = 300.0 * b**0.7, 0.4 * b**-0.5 + 0.03
                ttft, itl = 0.008 * (1 + 0.01 * b), 0.015 * (1 + 0.004 * b)
            status = "failed" if failed and backend == "pytorch" and b == 4 and cycle == cycles - 1 else "completed"
            error = {"type": "OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                     "traceback": None, "exit_code": 1, "reason": "crash"} if status == "failed" else None
            job_dir = sweep_dir / str(index)
            series = None
            if timeseries and energy and index == 0:
                series = _power_series(n * output_tokens / (tok_s * f * speed), 250.0, rng)
            results.append(write_example_job(
                job_dir, requests=True, timeseries=series, overrides=overrides, config_hash=chash, cycle=cycle,
                output_tok_s=tok_s * f * speed, j_per_output_token=(jpt / f / speed) if energy else None,
                ttft_s=ttft / f, itl_s=itl / f, status=status, error=error, study_design_hash=design,
                job_index=index, backend=backend, batch_size=b, n=n, output_tokens=output_tokens,
                precision=precision, seed=cycle))
            entries.append({"index": index, "config": hashes.index(chash), "cycle": cycle, "config_hash": chash,
                            "overrides": overrides, "status": status, "job_dir": str(job_dir),
                            **({"error": error} if error else {})})
    if skipped:
        bad = ["pytorch.batch_size=0"]
        for cycle in range(cycles):
            entries.append({"index": len(entries), "config": len(configs), "cycle": cycle,
                            "config_hash": hashing.digest(bad), "overrides": bad, "status": "skipped",
                            "reason": "pytorch.batch_size=0 is invalid: allowed an integer >= 1"})
    manifest_mod.write(sweep_dir, manifest_mod.new(design, entries, status="completed"))
    return results
