"""Stand-ins for hardware this machine lacks, behind the interfaces the real things use.

- NVML: the GPU simulator (`tests/fakes/gpu_sim.py`, re-exported here): real pynvml exceptions and structs,
  per-model power reporting, 100 ms counter ticks, MIG, mixed-model hosts, handle errors, old drivers.
  `sim_meter` / `run_for` drive llem's NVML meter on the simulator's clock, so windows take no real time.
- `FakeRaplTree`: a powercap folder whose `energy_uj` files a thread advances at known powers,
  wrapping at `max_energy_range_uj`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_sim import MODELS, SimClock, SimGpu, SimNvml, add_migs, gpu_uuid, host  # noqa: F401  (re-exported)


def sim_meter(sim: SimNvml, hz: float = 10.0, **kw: Any) -> Any:
    """llem's NvmlMeter on the simulator's clock: it polls and samples only when the test moves time."""
    from llem.energy.meters.nvml.meter import NvmlMeter

    clock = sim.clock
    assert isinstance(clock, SimClock), "sim_meter needs host(..., clock=SimClock())"
    return NvmlMeter(hz, clock=clock, sleep=clock.sleep, threaded=False, **kw)


def run_for(meter: Any, seconds: float, during: Callable[[float], None] | None = None) -> None:
    """Between a sim meter's `start` and `stop`: move the clock `seconds` in sample-rate steps, sampling
    after each step but the last (the closing sample is `stop`'s own). `during(t)` runs before each sample
    (script the power there)."""
    n = max(1, round(seconds * meter.sample_hz))
    for i in range(n):
        meter.clock.advance(seconds / n)
        if during:
            during(meter.clock())
        if i < n - 1:
            meter.sample_now()


# -- RAPL ------------------------------------------------------------------------------------------
@dataclass
class Zone:
    rel: str  # path below the root, e.g. "intel-rapl:0" or "intel-rapl:0/intel-rapl:0:2"
    name: str
    power_w: float
    max_range_uj: int = 262_143_328_850
    start_uj: int = 0


class FakeRaplTree:
    """A powercap tree in `root`; `start()` runs a thread that rewrites every energy_uj (atomically) every
    `period_s` with start + power × elapsed, modulo the zone's max range."""

    def __init__(self, root: Path, zones: list[Zone], period_s: float = 0.0005) -> None:
        self.root, self.zones, self.period_s = root, zones, period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = time.perf_counter()
        self.log: dict[str, list[tuple[float, int]]] = {z.rel: [(self.t0, z.start_uj)] for z in zones}  # (t, value)
        for z in zones:
            d = root / z.rel
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(z.name + "\n")
            (d / "max_energy_range_uj").write_text(f"{z.max_range_uj}\n")
            self._write(z, z.start_uj)

    def _write(self, z: Zone, value: int) -> None:
        d = self.root / z.rel
        tmp = d / ".energy_uj.tmp"
        tmp.write_text(f"{value}\n")
        os.replace(tmp, d / "energy_uj")

    def value(self, z: Zone, t: float) -> int:
        return int(z.start_uj + z.power_w * (t - self.t0) * 1e6) % (z.max_range_uj + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            t = time.perf_counter()
            for z in self.zones:
                value = self.value(z, t)
                self.log[z.rel].append((t, value))
                self._write(z, value)

    def expected_j(self, rel: str, start_uj: int, end_uj: int) -> float:
        """Exact reference: known power × the time between the writes that produced the two counter values a
        reader saw (found in the write log), however late this thread or the reader ran."""
        z = next(z for z in self.zones if z.rel == rel)
        log = self.log[rel]
        t_a = next(t for t, v in log if v == start_uj)
        t_b = next(t for t, v in reversed(log) if v == end_uj)
        return z.power_w * (t_b - t_a)

    def start(self) -> FakeRaplTree:
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def __enter__(self) -> FakeRaplTree:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def intel_tree(root: Path, package_w: float = 40.0, dram_w: float = 8.0, max_range_uj: int = 262_143_328_850,
               start_uj: int = 0) -> FakeRaplTree:
    """One Intel package with core and dram sub-zones, plus the mmio duplicate the kernel also exposes."""
    return FakeRaplTree(root, [
        Zone("intel-rapl:0", "package-0", package_w, max_range_uj, start_uj),
        Zone("intel-rapl:0/intel-rapl:0:0", "core", package_w * 0.6, max_range_uj, start_uj),
        Zone("intel-rapl:0/intel-rapl:0:1", "dram", dram_w, max_range_uj, start_uj),
        Zone("intel-rapl-mmio:0", "package-0", package_w, max_range_uj, start_uj),
    ])
