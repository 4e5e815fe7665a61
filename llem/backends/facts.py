"""What a backend reports about the job after the run, for the result: the loaded model (`model`), the
accelerators it used (`environment.gpus`) and its peak memory (`memory`). Pure: no torch, no vLLM.

Each type writes its block with `as_dict()`; a field left None is not written (backends report
different figures), except where a field's comment says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelFacts:
    """The result's `model` block: what loaded (counts, dtype, device, sources, generation settings applied)
    and the parameter count checked against an independent count (`parameters_check`, with a `warning`
    when they differ). Backends know different facts: `keys` lists the ones this backend wrote, in its
    order (a fact it wrote may be None: known to be unknown)."""

    parameters: int | None = None
    non_embedding_parameters: int | None = None
    architecture: str | None = None
    dtype: str | None = None  # the dtype holding the most parameters
    dtypes: dict[str, int] | None = None  # pytorch: parameters per dtype
    device: str | None = None
    attn_implementation: str | None = None
    source: dict[str, Any] | None = None  # ModelSource.record(): kind, id, path, revision, commit ...
    tokenizer: dict[str, Any] | None = None
    engine_model: dict[str, Any] | None = None  # vLLM: the model and tokenizer its engine was given
    served_model: str | None = None  # openai: the server's model name, and its URL
    served_by: str | None = None
    generation: dict[str, Any] | None = None  # the decoding settings as applied (backend's own names)
    torch_threads: int | None = None
    parameters_check: dict[str, Any] | None = None  # {ok, parameters, reference_parameters, reference[, warning]}
    keys: list[str] = field(default_factory=list)

    def set(self, **facts: Any) -> None:
        """Record facts (a key written again keeps its place, as in a dict)."""
        for k, v in facts.items():
            if k not in self.__dataclass_fields__ or k == "keys":
                raise KeyError(f"ModelFacts has no {k!r}")
            setattr(self, k, v)
            if k not in self.keys:
                self.keys.append(k)

    @property
    def warning(self) -> str | None:
        return (self.parameters_check or {}).get("warning")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys}


@dataclass
class DeviceInfo:
    """One accelerator the job used: its index as the job sees it, and what the backend could read of it."""

    index: int
    name: str | None = None
    uuid: str | None = None  # GPU (or MIG instance) UUID
    total_memory_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        for key in ("name", "uuid", "total_memory_bytes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class MemoryUsage:
    """Peak memory, bytes: llem's own process and, per backend, its devices, engine or server processes."""

    peak_rss_bytes: int  # llem's process (VmHWM)
    peak_allocated_bytes: dict[str, int] | None = None  # pytorch on CUDA: per device, torch's allocator
    peak_reserved_bytes: dict[str, int] | None = None
    engine_peak_rss_bytes: dict[str, int] | None = None  # vLLM: "<process name>-<pid>" → VmHWM
    server_peak_rss_bytes: dict[str, int] | None = None  # openai, managed server: pid → VmHWM
    kv_cache_tokens: int | None = None  # vLLM: KV cache blocks × block size (None: no block count)
    kv_cache_read: bool = False  # the engine's cache config was read: `kv_cache_tokens` is written, even None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_bytes": self.peak_rss_bytes}
        for key in ("peak_allocated_bytes", "peak_reserved_bytes", "engine_peak_rss_bytes", "server_peak_rss_bytes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.kv_cache_read:
            out["kv_cache_tokens"] = self.kv_cache_tokens
        return out


def peak_rss_self() -> int:
    """This process's peak resident set size in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
