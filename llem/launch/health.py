"""GPU health before each job: memory left in use and foreign processes on the job's GPUs (NVML).

`probe` reads NVML (imported only here, only when called); `assess` is the pure decision. What was
seen travels to the job (env var `HEALTH_ENV`, JSON) and lands in result.json
`environment.health`, so a measurement taken next to someone else's process says so.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

HEALTH_ENV = "LLEM_HEALTH"
MIB = 1024 * 1024


@dataclass
class GpuState:
    ref: str  # CUDA_VISIBLE_DEVICES entry (index or UUID) the job will see
    name: Optional[str] = None
    uuid: Optional[str] = None
    memory_used_mib: Optional[float] = None
    memory_total_mib: Optional[float] = None
    processes: list[dict[str, Any]] = field(default_factory=list)  # {pid, used_mib}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe(refs: Optional[Sequence[str]]) -> tuple[list[GpuState], Optional[str]]:
    """States of the GPUs named by `refs` (None: every GPU NVML sees). ([], reason) without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:
        return [], f"NVML unavailable ({type(e).__name__}: {e})"
    try:
        if refs is None:
            refs = [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        states = []
        for ref in refs:
            if ref.isdigit():
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(ref))
            else:
                handle = pynvml.nvmlDeviceGetHandleByUUID(ref)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            procs = []
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    found = getattr(pynvml, getter)(handle)
                except Exception:
                    found = []
                for p in found:
                    used = getattr(p, "usedGpuMemory", None)
                    procs.append({"pid": int(p.pid), "used_mib": used / MIB if isinstance(used, int) else None})
            states.append(GpuState(ref=ref, name=_text(pynvml.nvmlDeviceGetName(handle)),
                                   uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                                   memory_used_mib=mem.used / MIB, memory_total_mib=mem.total / MIB,
                                   processes=procs))
        return states, None
    except Exception as e:
        return [], f"NVML query failed ({type(e).__name__}: {e})"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def assess(states: Sequence[GpuState], max_memory_used_mib: float, check_processes: bool,
           own_pids: Collection[int]) -> list[str]:
    """Problems worth a warning: memory in use above the threshold, processes that are not ours."""
    problems = []
    for s in states:
        if s.memory_used_mib is not None and s.memory_used_mib > max_memory_used_mib:
            problems.append(f"GPU {s.ref}: {s.memory_used_mib:.0f} MiB in use before the job "
                            f"(threshold study.health_max_memory_used_mib={max_memory_used_mib:g})")
        if check_processes:
            foreign = sorted({p["pid"] for p in s.processes if p["pid"] not in own_pids})
            if foreign:
                problems.append(f"GPU {s.ref}: foreign process(es) {', '.join(map(str, foreign))} running")
    return problems


def check(refs: Optional[Sequence[str]], max_memory_used_mib: float, check_processes: bool,
          own_pids: Collection[int], probe_fn: Callable[..., tuple[list[GpuState], Optional[str]]] = probe
          ) -> dict[str, Any]:
    """One health check → the report recorded with the job."""
    states, reason = probe_fn(refs)
    problems = assess(states, max_memory_used_mib, check_processes, own_pids)
    return {"checked": reason is None, "ok": not problems, "problems": problems, "reason": reason,
            "gpus": [asdict(s) for s in states],
            "thresholds": {"max_memory_used_mib": max_memory_used_mib, "check_processes": check_processes}}


def to_env(report: dict[str, Any]) -> dict[str, str]:
    return {HEALTH_ENV: json.dumps(report, separators=(",", ":"))}
