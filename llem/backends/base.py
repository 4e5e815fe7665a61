"""The backend interface a job drives: load → prepare → warmup → run (inside the window)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llem.backends.facts import DeviceInfo, MemoryUsage, ModelFacts, peak_rss_self
from llem.config.schema import BACKENDS, ExperimentConfig, import_target
from llem.errors import ConfigError
from llem.measure.latency import Phase, RequestRecord, SteadyState


@dataclass
class Workload:
    """Prompts after tokenization/truncation, split the way the backend will run them."""

    prompts: list[str]
    input_tokens: list[int]  # per request, after truncation
    batch_size: int  # requests per batch; 0 = engine schedules (continuous batching)
    truncated: int = 0  # prompts cut to max_input_tokens
    payload: Any = None  # backend-private (tokenized batches)


@dataclass
class EngineInfo:
    """What a continuous-batching engine (vLLM) resolved and what happened in the run: the result's
    workload.engine."""

    vllm_version: str | None = None
    device: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    block_size: int | None = None
    kv_cache_blocks: int | None = None
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool | None = None
    peak_running_requests: int | None = None  # most requests scheduled at once (None: no schedule times)
    prefix_cache_hit_tokens: int = 0
    preemptions: int | None = None  # None where the engine did not report them for every request
    finish_reasons: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # vLLM CPU environment variables set (device cpu)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ServingInfo:
    """What a serving backend reports beside its requests: the arrival schedule as run (the result's
    serving.schedule) and its own facts (serving.backend_info)."""

    schedule: dict[str, Any]  # Schedule.info (source, arrivals, seed...): free-form, written unchanged
    offered_rate_s: float | None  # the schedule's offered request rate (None: all at once)
    requests: int  # requests planned
    output_lengths_matched: int | None = None  # fixed-length requests (trace) that produced their length
    input_lengths_matched: int | None = None  # ... and were counted at their input length
    # The backend's own facts (server, engine, lateness, usage mismatches): free-form per backend, written to
    # serving.backend_info unchanged; nothing reads a key of it.
    backend: dict[str, Any] = field(default_factory=dict)

    def schedule_block(self) -> dict[str, Any]:
        """The result's serving.schedule: Schedule.info, the offered rate, the plan's size, lengths matched."""
        out = {**self.schedule, "offered_rate_s": self.offered_rate_s, "requests": self.requests}
        if self.output_lengths_matched is not None:
            out["output_lengths_matched"] = self.output_lengths_matched
        if self.input_lengths_matched is not None:
            out["input_lengths_matched"] = self.input_lengths_matched
        return out


@dataclass
class RunOutput:
    """What the measured pass produced."""

    records: list[RequestRecord]
    phases: list[Phase] = field(default_factory=list)  # prefill/decode boundaries for per-phase energy
    latency_method: str | None = None  # how request times were taken (for the reader of the code and logs)
    latency_note: str | None = None  # a result warning: what latency figures are missing or caveated, and why
    steady_state: SteadyState | None = None  # vLLM offline: the span with a full batch (ML.ENERGY)
    steady_state_note: str | None = None  # a result warning: why there is no steady state
    engine: EngineInfo | None = None  # continuous-batching engine settings and run counts (vLLM)
    serving: ServingInfo | None = None  # serving scenario: schedule as run and the backend's facts


class Backend(ABC):
    name: str = "backend"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.sources: Any = None  # llem.models.Sources: what loads (path, pinned Hub commit, tokenizer)
        self.job_dir: Path | None = None  # the job's folder, for side files (openai: the server's log)

    @abstractmethod
    def load(self) -> None:
        """Load weights and tokenizer onto the device (timed by the caller)."""

    @abstractmethod
    def prepare(self, prompts: list[str]) -> Workload:
        """Tokenize, truncate and batch every prompt; no generation."""

    @abstractmethod
    def warmup_step(self, workload: Workload) -> float:
        """One warmup unit on real prompts; returns its latency in seconds."""

    @abstractmethod
    def run(self, workload: Workload) -> RunOutput:
        """The measured pass over the whole workload. Called inside the measurement window."""

    def sync(self) -> None:
        """Wait for queued device work (CUDA) so the window's edges are true."""

    def model_facts(self) -> ModelFacts:
        """parameters, non_embedding_parameters, dtype, device: for the result and FLOPs."""
        return ModelFacts()

    def memory(self) -> MemoryUsage:
        """Peak memory figures, bytes."""
        return MemoryUsage(peak_rss_self())

    def devices(self) -> list[DeviceInfo]:
        """Accelerators this job used (name, index, uuid where known)."""
        return []

    def compile_report(self) -> dict[str, Any] | None:
        """Shapes warmed and graphs compiled inside the window, where the backend compiles (else None)."""
        return None

    def close(self) -> None:
        """Free the engine; vLLM must leave no processes behind."""


def make_backend(cfg: ExperimentConfig) -> Backend:
    """The Backend class the registry names for this backend and scenario (imported only now: heavy)."""
    spec = BACKENDS.get(cfg.backend)
    if spec is None:
        raise ConfigError([("backend", cfg.backend, f"one of {', '.join(BACKENDS)}")])
    scenario = cfg.scenario.name
    target = spec.serving_target if scenario == "serving" else spec.target
    if target is None:
        raise ConfigError([("scenario", scenario, f"{' or '.join(spec.scenarios())} with backend={cfg.backend}")])
    return import_target(target)(cfg)
