"""The backend interface a job drives: load → prepare → warmup → run (inside the window)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem.config.schema import BACKENDS, ExperimentConfig, import_target
from llem.errors import ConfigError
from llem.measure.latency import Phase, RequestRecord


@dataclass
class Workload:
    """Prompts after tokenization/truncation, split the way the backend will run them."""

    prompts: list[str]
    input_tokens: list[int]  # per request, after truncation
    batch_size: int  # requests per batch; 0 = engine schedules (continuous batching)
    truncated: int = 0  # prompts cut to max_input_tokens
    payload: Any = None  # backend-private (tokenized batches)


@dataclass
class RunOutput:
    """What the measured pass produced."""

    records: list[RequestRecord]
    phases: list[Phase] = field(default_factory=list)  # prefill/decode boundaries for per-phase energy
    extra: dict[str, Any] = field(default_factory=dict)


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

    def model_facts(self) -> dict[str, Any]:
        """parameters, non_embedding_parameters, dtype, device: for the result and FLOPs."""
        return {}

    def memory(self) -> dict[str, Any]:
        """Peak memory figures, bytes."""
        return {}

    def devices(self) -> list[dict[str, Any]]:
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
