"""GPU slots: which GPUs each concurrently running job gets (pure).

`gpus_per_job=0` (default) means one slot, no pinning: jobs run one at a time and see whatever GPUs
the launcher sees. `gpus_per_job=N` splits the visible GPUs into floor(count / N) disjoint slots;
each job is pinned to its slot through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Optional

from llem.config.validate import ConfigError

Slot = tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries; () = no pinning

SHARED_NODE_WARNING = (
    "llem: {n} jobs will run at once ({per} GPU(s) each). They share CPU cores, host memory, PCIe and "
    "the node's power delivery, which can change each other's latency and energy; use "
    "study.gpus_per_job=0 (one job at a time) for the cleanest measurements."
)


def parse_visible(value: Optional[str]) -> Optional[list[str]]:
    """CUDA_VISIBLE_DEVICES → entries (indices or GPU-/MIG- UUIDs); None when unset."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def visible_gpus(env: Mapping[str, str], nvml_count: Optional[int]) -> list[str]:
    """The GPUs the launcher may hand out: CUDA_VISIBLE_DEVICES when set (e.g. a SLURM allocation),
    else every GPU NVML counts, by index."""
    listed = parse_visible(env.get("CUDA_VISIBLE_DEVICES"))
    if listed is not None:
        return listed
    return [str(i) for i in range(nvml_count or 0)]


def make_slots(gpus: Sequence[str], gpus_per_job: int) -> list[Slot]:
    if gpus_per_job == 0:
        return [()]
    if gpus_per_job > len(gpus):
        seen = ",".join(gpus) if gpus else "none"
        raise ConfigError([("study.gpus_per_job", gpus_per_job,
                            f"0 (no pinning) or at most the {len(gpus)} GPU(s) visible (visible: {seen})")])
    n = len(gpus) // gpus_per_job
    return [tuple(gpus[i * gpus_per_job:(i + 1) * gpus_per_job]) for i in range(n)]


def slot_env(slot: Slot, env: Mapping[str, str]) -> dict[str, str]:
    """Environment additions pinning a job to its slot. PCI bus order makes CUDA's numbering match
    NVML's (the health check and energy meters use NVML indices)."""
    if not slot:
        return {}
    out = {"CUDA_VISIBLE_DEVICES": ",".join(slot)}
    if "CUDA_DEVICE_ORDER" not in env:
        out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return out


def nvml_device_count() -> Optional[int]:
    """How many GPUs NVML sees; None without NVML (no GPU, no driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def launcher_slots(gpus_per_job: int, env: Optional[Mapping[str, str]] = None) -> list[Slot]:
    env = os.environ if env is None else env
    return make_slots(visible_gpus(env, nvml_device_count() if gpus_per_job else None), gpus_per_job)
