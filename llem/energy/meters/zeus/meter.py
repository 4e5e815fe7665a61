"""Zeus (`pip install llem[zeus]`): one ZeusMonitor window around llem's window.

Zeus reads the same NVML energy counter (and RAPL where readable) and returns a `Measurement` with
`time`, `gpu_energy` {cuda index: J}, `cpu_energy` / `dram_energy` {package index: J} or None. llem
syncs the device itself at the window's edges, so Zeus is asked not to sync again.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable

_WINDOW = "llem"


def visible_problem(cvd: str | None) -> str | None:
    """Why Zeus 0.16 cannot measure the job's GPUs under this CUDA_VISIBLE_DEVICES (None: it can).
    Zeus parses the variable with int(): a `GPU-…` UUID raises ValueError deep inside it, and a `MIG-…`
    entry makes it measure no GPU at all (its GPU init fails and it carries on without GPUs)."""
    entries = [e.strip() for e in (cvd or "").split(",") if e.strip()]
    odd = [e for e in entries if not e.lstrip("-").isdigit()]
    if not odd:
        return None
    if any(e.upper().startswith("MIG-") for e in odd):
        return (f"CUDA_VISIBLE_DEVICES={cvd!r} names MIG instances, which Zeus cannot measure (it would measure "
                "no GPU); use energy=nvml (measures the parent GPU, with a warning) or integer GPU indices")
    return (f"CUDA_VISIBLE_DEVICES={cvd!r} uses GPU UUIDs, which Zeus cannot parse (it expects integer "
            "indices); use energy=nvml, or integer indices with CUDA_DEVICE_ORDER=PCI_BUS_ID")


def no_gpu_warning(gpu_host: bool, gpu_indices: list[int], cvd: str | None) -> str | None:
    """A warning when Zeus will measure no GPU although NVML sees one (its GPU init failed silently)."""
    if not gpu_host or gpu_indices:
        return None
    why = " (CUDA_VISIBLE_DEVICES is empty)" if cvd is not None and not cvd.strip() else ""
    return f"zeus measures no GPU on this GPU host{why}: GPU energy is missing from its figures; try energy=nvml"


class ZeusMeter(Meter):
    name = "zeus"
    update_period_s = 0.1  # Zeus reads NVML's energy counter

    @classmethod
    def from_config(cls, cfg: Any) -> ZeusMeter:
        return cls(None if cfg.gpu_indices is None else [int(i) for i in cfg.gpu_indices])

    def __init__(self, gpu_indices: list[int] | None = None) -> None:
        self.gpu_indices = gpu_indices
        self.monitor: Any = None
        self._open = False
        self.warnings: list[str] = []

    def probe(self) -> None:
        if self.monitor is not None:
            return
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        problem = visible_problem(cvd)
        if problem:
            raise MeterUnavailable(problem)
        try:
            from zeus.monitor import ZeusMonitor
        except ImportError as e:
            raise MeterUnavailable("energy=zeus needs the Zeus package: pip install llem[zeus]") from e
        try:
            self.monitor = ZeusMonitor(gpu_indices=self.gpu_indices, approx_instant_energy=True)
        except Exception as e:
            raise MeterUnavailable(f"Zeus could not start: {type(e).__name__}: {e}") from e
        if not self.monitor.gpu_indices and not self.monitor.cpu_indices:
            raise MeterUnavailable("Zeus found no GPU (NVML) and no readable CPU (RAPL) to measure on this host")
        from llem.device import gpu_host

        warning = no_gpu_warning(gpu_host(), list(self.monitor.gpu_indices), cvd)
        self.warnings = [warning] if warning else []

    def describe(self) -> str:
        text = f"zeus: GPUs {self.monitor.gpu_indices}, CPU packages {self.monitor.cpu_indices}"
        return "; ".join([text, *self.warnings])

    def start(self) -> None:
        self.probe()
        self.monitor.begin_window(_WINDOW, sync_execution=False)
        self._open = True

    def stop(self) -> EnergyReading:
        m = self.monitor.end_window(_WINDOW, sync_execution=False)
        self._open = False
        devices = [DeviceEnergy(f"gpu:{i}", "gpu", float(j), "zeus") for i, j in sorted(m.gpu_energy.items())]
        devices += [DeviceEnergy(f"cpu:package-{i}", "cpu", float(j), "zeus")
                    for i, j in sorted((m.cpu_energy or {}).items())]
        devices += [DeviceEnergy(f"dram:package-{i}", "dram", float(j), "zeus")
                    for i, j in sorted((m.dram_energy or {}).items())]
        return EnergyReading(meter=self.name, measured=bool(devices), duration_s=float(m.time), devices=devices,
                             reason=None if devices else "Zeus measured no device", warnings=list(self.warnings),
                             update_period_s=self.update_period_s)

    def close(self) -> None:
        if self._open and self.monitor is not None:
            with contextlib.suppress(Exception):
                self.monitor.end_window(_WINDOW, sync_execution=False, cancel=True)
            self._open = False
