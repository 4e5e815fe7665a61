"""Zeus (`pip install llem[zeus]`): one ZeusMonitor window around llem's window.

Zeus reads the same NVML energy counter (and RAPL where readable) and returns a `Measurement` with
`time`, `gpu_energy` {cuda index: J}, `cpu_energy` / `dram_energy` {package index: J} or None. llem
syncs the device itself at the window's edges, so Zeus is asked not to sync again.
"""

from __future__ import annotations

import contextlib
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable

_WINDOW = "llem"


class ZeusMeter(Meter):
    name = "zeus"
    update_period_s = 0.1  # Zeus reads NVML's energy counter

    def __init__(self, gpu_indices: list[int] | None = None) -> None:
        self.gpu_indices = gpu_indices
        self.monitor: Any = None
        self._open = False

    def probe(self) -> None:
        if self.monitor is not None:
            return
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

    def describe(self) -> str:
        return f"zeus: GPUs {self.monitor.gpu_indices}, CPU packages {self.monitor.cpu_indices}"

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
                             reason=None if devices else "Zeus measured no device",
                             extra={"update_period_s": self.update_period_s, "sampled": False})

    def close(self) -> None:
        if self._open and self.monitor is not None:
            with contextlib.suppress(Exception):
                self.monitor.end_window(_WINDOW, sync_execution=False, cancel=True)
            self._open = False
