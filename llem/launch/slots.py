"""GPU slots: which GPUs each concurrently running job gets (pure).

`gpus_per_job=0` (default) means one slot, no pinning: jobs run one at a time and see whatever GPUs
the launcher sees. `gpus_per_job=N` splits the visible GPUs into floor(count / N) disjoint slots;
each job is pinned to its slot through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Optional

from llem.device import parse_visible
from llem.errors import ConfigError

__all__ = ["Slot", "SHARED_NODE_WARNING", "parse_visible", "visible_gpus", "make_slots", "slot_env",
           "nvml_device_count", "order_warning", "launcher_slots"]

Slot = tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries; () = no pinning

SHARED_NODE_WARNING = (
    "llem: {n} jobs will run at once ({per} GPU(s) each). They share CPU cores, host memory, PCIe and "
    "the node's power delivery, which can change each other's latency and energy; use "
    "study.gpus_per_job=0 (one job at a time) for the cleanest measurements."
)


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
    """Environment additions for one job: PCI bus order for CUDA's numbering (so it matches NVML's,
    which the meters, health check and results use) unless the user chose an order, and the slot's
    CUDA_VISIBLE_DEVICES when pinned."""
    out = {} if "CUDA_DEVICE_ORDER" in env else {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    if slot:
        out["CUDA_VISIBLE_DEVICES"] = ",".join(slot)
    return out


def nvml_device_count() -> Optional[int]:
    """How many GPUs NVML sees; None without NVML (no GPU, no driver)."""
    from llem.device import device_count

    return device_count()


def order_warning(env: Mapping[str, str]) -> Optional[str]:
    """A warning when the user's CUDA_DEVICE_ORDER makes CUDA number this host's GPUs differently from
    NVML (mixed GPU models); None otherwise or without NVML. The jobs' nvml meters refuse integer
    CUDA_VISIBLE_DEVICES entries they cannot map for sure."""
    order = env.get("CUDA_DEVICE_ORDER")
    if order is None or order.strip().upper() == "PCI_BUS_ID":
        return None
    from llem.device import nvidia_session

    try:
        with nvidia_session() as host:
            models = host.mixed_order_models()
    except Exception:
        return None
    if models is None:
        return None
    return (f"llem: warning: CUDA_DEVICE_ORDER={order} on a host mixing GPU models (NVML/PCI order {models}): CUDA "
            "numbers the GPUs differently from NVML, so GPU indices in CUDA_VISIBLE_DEVICES, study.gpus_per_job "
            "slots and energy.gpu_indices may name other GPUs than intended; unset it (llem then uses PCI_BUS_ID) "
            "or use GPU UUIDs")


def launcher_slots(gpus_per_job: int, env: Optional[Mapping[str, str]] = None) -> list[Slot]:
    env = os.environ if env is None else env
    warning = order_warning(env)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return make_slots(visible_gpus(env, nvml_device_count() if gpus_per_job else None), gpus_per_job)
