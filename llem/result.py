"""The result schema: one `result.json` per job, versioned, SI units in every name.

Bump SCHEMA_VERSION's minor for added fields, its major for renamed/removed ones; readers
(llem.results) check the major. Written atomically (llem/io.py) also when the job failed.
"""

from __future__ import annotations

import datetime as _dt
import traceback as _tb
from dataclasses import asdict, dataclass, field
from typing import Any

# 1.1: `serving` block and serving rows in requests.jsonl; identity model_source/_path/_commit and
# model source/tokenizer/generation facts; energy attribution + unattributed_devices (gpu_j: the job's
# GPUs only), baseline with/without a CUDA context; workload.compile
# 1.2: serving requests{planned, failed_by_reason}, tpot_s, ITL per streamed chunk; energy.node_j/node/basis;
# gpu_settings; objective; energy phases 'mixed'. Types and JSON Schema: llem/result_schema/ (same JSON)
SCHEMA_VERSION = "1.2.0"
RESULT_FILE = "result.json"
REQUESTS_FILE = "requests.jsonl"
TIMESERIES_FILE = "timeseries.parquet"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Result:
    """Sections are plain dicts so a reader needs only `json`; their keys are documented in README."""

    status: str = "running"  # running | completed | failed | interrupted
    schema_version: str = SCHEMA_VERSION
    llem_version: str = ""
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    # config_hash, study_design_hash, cycle, overrides, backend, model, dataset, precision
    identity: dict[str, Any] = field(default_factory=dict)
    # prompts, batch_size, input/output tokens (total, mean), truncated_prompts, max_output_tokens
    workload: dict[str, Any] = field(default_factory=dict)
    # load_s, warmup_s, warmup_batches, window_s, job_s
    timing: dict[str, Any] = field(default_factory=dict)
    # output_tok_s, total_tok_s, requests_s
    throughput: dict[str, Any] = field(default_factory=dict)
    # ttft_s, itl_request_mean_s, itl_step_s, e2e_s: {n, mean, p50, p90, p95, p99, min, max}
    latency: dict[str, Any] = field(default_factory=dict)
    # measured, reason, meters, selection, gpu_j, cpu_j, dram_j, devices, per-token figures
    energy: dict[str, Any] = field(default_factory=dict)
    # scenario=serving only (else empty): offered/achieved rate, throughput, TTFT/ITL/e2e/lateness, slo
    # (met, fraction, goodput_rate_s), steady_state, energy (per request, per SLO-meeting request, attribution)
    serving: dict[str, Any] = field(default_factory=dict)
    # total_flop, flop_per_output_token, method
    flops: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)  # peak_rss_bytes, peak_allocated_bytes{}
    model: dict[str, Any] = field(default_factory=dict)  # parameters, non_embedding_parameters, dtype
    environment: dict[str, Any] = field(default_factory=dict)
    # gpu.* applied to the job's GPUs (docs/gpu-settings.md): requested, devices[{uuid, previous, enforced}],
    # seen{device: sm_clock_mhz_mean, throttle_reasons, ...}, cool{wait_s, start_temperature_c}, applied_by
    gpu_settings: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved experiment config
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None  # type, message, traceback
    # study.objective set: fields, directions, values (null = missing), status ok|missing, missing{field: why}
    objective: dict[str, Any] | None = None

    def fail(self, exc: BaseException, status: str = "failed") -> None:
        self.status = status
        self.error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(_tb.format_exception(type(exc), exc, exc.__traceback__)),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def typed(self) -> Any:
        """This result as the typed blocks of llem/result_schema/types.py (ResultDoc; same JSON via to_json)."""
        from llem.result_schema.convert import parse
        from llem.result_schema.types import ResultDoc

        return parse(self.as_dict(), ResultDoc)


def flops_block(non_embedding_parameters: int | None, input_tokens: int, output_tokens: int,
                n_forward_tokens: int | None = None) -> dict[str, Any]:
    """Forward-pass FLOPs ≈ 2 × non-embedding parameters × tokens processed (Kaplan et al. 2020)."""
    if not non_embedding_parameters:
        return {"total_flop": None, "method": "unavailable: parameter count unknown"}
    tokens = n_forward_tokens if n_forward_tokens is not None else input_tokens + output_tokens
    total = 2 * non_embedding_parameters * tokens
    return {
        "total_flop": total,
        "flop_per_output_token": total / output_tokens if output_tokens else None,
        "tokens_processed": tokens,
        "method": "2 * non_embedding_parameters * (input_tokens + output_tokens); attention FLOPs excluded",
    }
