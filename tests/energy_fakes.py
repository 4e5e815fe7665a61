"""Stand-ins for hardware this machine lacks, behind the interfaces the real things use.

- `FakePynvml`: a module object installed as `sys.modules["pynvml"]` (where llem imports NVML). Its
  energy counter integrates each GPU's power exactly over `time.perf_counter()`; tests change a GPU's
  power at any moment with `set_power`.
- `FakeRaplTree`: a powercap folder whose `energy_uj` files a thread advances at known powers,
  wrapping at `max_energy_range_uj`.
- The GPU simulator (`tests/gpu_sim.py`, re-exported here): real pynvml exceptions and structs, per-model
  power reporting, 100 ms counter ticks, MIG, mixed-model hosts, handle errors, old drivers.
"""

from __future__ import annotations

import os
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_sim import MODELS, SimClock, SimGpu, SimNvml, add_migs, gpu_uuid, host  # noqa: F401  (re-exported)

NOT_SUPPORTED = 3
FUNCTION_NOT_FOUND = 13


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float = 100.0
    has_counter: bool = True
    temperature_c: float = 40.0
    temp_rise_c_per_kj: float = 0.0  # temperature climbs with energy used (drift tests)
    reasons: int = 0  # clock event reasons bitmask
    persistence: int = 1
    power_limit_mw: int = 700_000
    pids: list[int] = field(default_factory=list)
    counter_period_s: float = 0.0  # >0: the counter only advances every this many seconds
    energy_j: float = 0.0
    t_last: float = field(default_factory=time.perf_counter)


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu, self.memory = gpu, memory


class _Mem:
    def __init__(self, used: int) -> None:
        self.used, self.total, self.free = used, 80 << 30, (80 << 30) - used


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid, self.usedGpuMemory = pid, 1 << 30


class FakePynvml(types.ModuleType):
    """The subset of nvidia-ml-py's `pynvml` that llem calls, with the same names and units."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_FEATURE_ENABLED = 1
    NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    NVML_ERROR_FUNCTION_NOT_FOUND = FUNCTION_NOT_FOUND
    NVMLError = FakeNVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: bool = False, event_reasons: bool = True) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0
        self.lock = threading.Lock()
        self.event_reasons = event_reasons  # False: an older driver without the clock-event-reasons call

    # -- simulation --------------------------------------------------------------------------------
    def _advance(self, g: FakeGpu) -> None:
        now = time.perf_counter()
        g.energy_j += g.power_w * (now - g.t_last)
        g.t_last = now

    def set_power(self, index: int, watts: float) -> None:
        with self.lock:
            g = self.gpus[index]
            self._advance(g)
            g.power_w = watts

    def energy_between(self, index: int) -> float:
        with self.lock:
            self._advance(self.gpus[index])
            return self.gpus[index].energy_j

    # -- pynvml API --------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNVMLError(12)  # NVML_ERROR_LIBRARY_NOT_FOUND
        self.inits += 1
        now = time.perf_counter()
        for g in self.gpus:
            g.t_last = now

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040  # CUDA 12.4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu | tuple[str, FakeGpu]:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
            if uuid.startswith("MIG-") and uuid[4:].startswith(g.uuid[4:12]):  # a MIG instance of g
                return ("mig", g)
        raise FakeNVMLError(6)  # NOT_FOUND

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, mig: tuple[str, FakeGpu]) -> FakeGpu:
        return mig[1]

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if not h.has_counter:
            raise FakeNVMLError(NOT_SUPPORTED)
        with self.lock:
            self._advance(h)
            if h.counter_period_s:
                # Counter value as of its last update tick (energy up to then, exactly).
                tick = (h.t_last // h.counter_period_s) * h.counter_period_s
                return int((h.energy_j - h.power_w * (h.t_last - tick)) * 1000)
            return int(h.energy_j * 1000)  # mJ

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return int(h.power_w * 1000)  # mW

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        with self.lock:
            self._advance(h)
            return int(h.temperature_c + h.temp_rise_c_per_kj * h.energy_j / 1000)

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, kind: int) -> int:
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> _Util:
        return _Util(97, 40)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> _Mem:
        return _Mem(10 << 30)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        if not self.event_reasons:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        return h.reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeGpu) -> int:
        return h.reasons

    def nvmlDeviceGetPersistenceMode(self, h: FakeGpu) -> int:
        return h.persistence

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return h.power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu | tuple[str, FakeGpu]) -> list[_Proc]:
        g = h[1] if isinstance(h, tuple) else h  # a MIG handle lists its parent's processes here
        return [_Proc(p) for p in g.pids]


def uuid(n: int) -> str:
    return f"GPU-{n:08x}-1111-2222-3333-{n:012x}"


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
