"""GPU health before each job: memory left in use and foreign processes on the job's GPUs (NVML).

`probe` reads the GPUs through the device layer (`llem.device`, imported only when called); `assess` is the pure decision. What was
seen travels to the job (env var `HEALTH_ENV`, JSON) and lands in result.json
`environment.health`, so a measurement taken next to someone else's process says so.
"""

from __future__ import annotations

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


def probe(refs: Optional[Sequence[str]]) -> tuple[list[GpuState], Optional[str]]:
    """States of the GPUs named by `refs` (CUDA_VISIBLE_DEVICES entries; None: every GPU NVML sees),
    mapped as the job's CUDA will (llem.device: PCI order unless the user set CUDA_DEVICE_ORDER, UUID
    prefixes, MIG instances). On a host without NVML, the AMD GPUs amdsmi lists (the entries read as
    HIP reads CUDA_VISIBLE_DEVICES, within ROCR_VISIBLE_DEVICES). ([], reason) without either library
    or when the entries cannot be mapped."""
    import os

    from llem.device import DeviceError, DeviceUnavailable, amd_session, nvidia_session

    joined = None if refs is None else ",".join(refs)
    try:
        with nvidia_session() as host:
            return _states(lambda: host.resolve(joined, os.environ.get("CUDA_DEVICE_ORDER") or "PCI_BUS_ID"), "NVML")
    except DeviceUnavailable as e:
        nvml_reason = f"NVML unavailable ({e})"
    except DeviceError as e:
        return [], f"NVML unavailable ({e})"
    except Exception as e:
        return [], f"NVML unavailable ({type(e).__name__}: {e})"
    try:
        with amd_session() as host:
            env = {k: v for k, v in os.environ.items() if k == "ROCR_VISIBLE_DEVICES"}
            if joined is not None:
                env["CUDA_VISIBLE_DEVICES"] = joined
            return _states(lambda: host.resolve_job(env), "amdsmi")
    except Exception:  # no AMD GPU either: the reason is NVML's, as before
        return [], nvml_reason


def _states(resolve: Callable[[], Any], library: str) -> tuple[list[GpuState], Optional[str]]:
    from llem.device import DeviceError

    try:
        res = resolve()
        states = []
        for v in res.visible:
            dev = v.target  # the MIG instance's own memory and processes, else the GPU's
            used, total = dev.memory_info()
            procs = [{"pid": p.pid, "used_mib": p.used_bytes / MIB if p.used_bytes is not None else None}
                     for p in dev.processes()]
            states.append(GpuState(ref=v.ref, name=dev.name, uuid=v.mig_uuid or v.gpu.uuid,
                                   memory_used_mib=used / MIB, memory_total_mib=total / MIB, processes=procs))
    except DeviceError as e:
        return [], str(e)
    except Exception as e:
        detail = getattr(e, "detail", None) or f"{type(e).__name__}: {e}"
        return [], f"{library} query failed ({detail})"
    if not states and res.notes:
        return [], "; ".join(res.notes)
    return states, None


def assess(states: Sequence[GpuState], max_memory_used_mib: float, check_processes: bool,
           own_pids: Collection[int]) -> list[str]:
    """Problems worth a warning: memory in use above the threshold, processes that are not ours."""
    problems = []
    for s in states:
        if s.memory_used_mib is not None and s.memory_used_mib > max_memory_used_mib:
            problems.append(f"GPU {s.ref}: {s.memory_used_mib:.0f} MiB in use before the job "
                            f"(threshold hydra.launcher.health_max_memory_used_mib={max_memory_used_mib:g})")
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
