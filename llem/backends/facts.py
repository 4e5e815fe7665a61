"""What a backend reports about the job after the run, for the result: the accelerators it used
(`environment.gpus`) and its peak memory (`memory`). Pure: no torch, no vLLM.

Each type writes its block with `as_dict()`; a field left None is not written (backends report
different figures), except where a field's comment says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
