"""Vendor-neutral device identity records and CUDA's device-numbering rules (no vendor library here).

CUDA numbers the devices a process sees 0..n-1 after `CUDA_VISIBLE_DEVICES` (integers, `GPU-…` UUIDs
or unique prefixes, `MIG-…` instance UUIDs, legacy `MIG-GPU-<uuid>/<gi>/<ci>`; parsing stops at the
first entry that matches nothing). Its integers follow `CUDA_DEVICE_ORDER`: `FASTEST_FIRST` (CUDA's
default) or `PCI_BUS_ID`, which is NVML's order. On hosts mixing GPU models the two differ, so an
integer could name a different GPU to CUDA than to NVML: llem's launcher sets PCI_BUS_ID for every job
unless the user set an order, and `llem.device.nvidia.resolve` refuses integers it cannot map for sure.
AMD's mapping (HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES) is in `llem.device.amd`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llem.device.common import DeviceError

__all__ = ["DeviceError", "Gpu", "Resolution", "Visible", "describe_error", "fastest_first", "job_order",
           "parse_visible", "text", "use_pci_order"]


def describe_error(e: BaseException) -> str:
    try:
        out = str(e)
    except Exception:  # NVMLError.__str__ may call into the library for unknown codes
        out = repr(getattr(e, "value", e))
    return f"{type(e).__name__}: {out}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Gpu:
    """One physical GPU as its vendor library enumerates it (NVML index = PCI bus order)."""

    nvml_index: int  # the vendor library's index (NVML's, or amdsmi's processor-handle order)
    handle: Any = None
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    architecture: int | None = None
    mig_enabled: bool = False
    error: str | None = None  # why the library could not open it (NO_PERMISSION, GPU_IS_LOST, ...)
    device: Any = None  # the llem.device.common.GPU object for it (None when it could not be opened)

    @property
    def index(self) -> int:
        return self.nvml_index


@dataclass
class Visible:
    """One device of the job: its ordinal, the physical GPU behind it, the MIG instance if any."""

    cuda_index: int
    gpu: Gpu
    ref: str  # the CUDA_VISIBLE_DEVICES (or HIP_/ROCR_) entry, or the ordinal when unset
    mig_uuid: str | None = None
    mig_handle: Any = None
    mig_device: Any = None  # a GPU object for the MIG instance (its processes, memory); no energy

    @property
    def label(self) -> str:
        return f"gpu:{self.cuda_index}"

    @property
    def target(self) -> Any:
        """The GPU object whose processes and memory are this device's: the MIG instance's, else the GPU's."""
        return self.mig_device if self.mig_device is not None else self.gpu.device


@dataclass
class Resolution:
    visible: list[Visible]
    notes: list[str] = field(default_factory=list)
    order: str = "FASTEST_FIRST"
    orders_differ: bool = False


def fastest_first(gpus: Sequence[Gpu]) -> list[Gpu]:
    """CUDA's default order, estimated: higher compute capability first, PCI order within ties."""
    return sorted(gpus, key=lambda g: tuple(-x for x in (g.compute_capability or (0, 0))))


def mixed_order_models(gpus: Sequence[Gpu]) -> str | None:
    """'0: name, 1: name' when CUDA's fastest-first order differs from PCI order on these GPUs, else None."""
    if [g.nvml_index for g in fastest_first(gpus)] == [g.nvml_index for g in gpus]:
        return None
    return ", ".join(f"{g.nvml_index}: {g.name}" for g in gpus)


def parse_visible(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES → its entries (indices, UUIDs, prefixes); None when unset."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def use_pci_order(env: dict[str, str] | None = None) -> str:
    """Make CUDA number GPUs as NVML does (PCI bus order) unless the user chose an order; call before
    CUDA initialises (the launcher does it for its jobs, `run_job` for single runs). Returns the order."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    return env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def job_order(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env  # type: ignore[assignment]
    return env.get("CUDA_DEVICE_ORDER") or "FASTEST_FIRST"
