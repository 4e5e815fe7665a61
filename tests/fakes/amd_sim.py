"""An AMD GPU host simulator behind the `amdsmi` import (ROCm's amdsmi Python API, 6.x/7.x names and
return dicts as `py-interface/amdsmi_interface.py` defines them), for hardware this machine lacks.

`SimAmdSmi` is a module object installed as `sys.modules["amdsmi"]` (tests: `install(sim)`; subprocess
jobs: `sim_folder(...)` writes an `amdsmi.py` that builds the host, for PYTHONPATH). As unkind as AMD's
library:
- `AmdSmiException` / `AmdSmiLibraryException(err_code)` with `err_code`, `get_error_code()`,
  `get_error_info()` and AMD's status codes (NOT_SUPPORTED 2, NO_PERM 10, NOT_FOUND 31, ...);
- `amdsmi_get_energy_count` → {power, energy_accumulator, counter_resolution (µJ, 15.259), timestamp (ns)}:
  the accumulator is floor(true energy / resolution) as of the last counter update (every
  `counter_period_s`, 1 ms default, at a per-GPU phase) and wraps at 2**`counter_bits` ticks;
- `amdsmi_get_power_info` → current_socket_power (W; "N/A" on MI250X, whose SMU reports only
  average_socket_power, a moving average over `avg_window_s`), average_socket_power, voltages, power_limit;
- models: MI300X (8 per host, no EDGE temperature: code 2), MI250X, MI210; per-GPU `unsupported` function
  names (answer code 2), `open_error` (every call on the GPU fails with that code), process lists with
  `pids` (and `runs_caller`: the calling process, as the job process sees itself), power caps in µW
  (`amdsmi_set_power_cap` needs `root`, else NO_PERM).
`import_error`: `sim_folder(..., import_error="KeyError")` writes an amdsmi that raises at import, as the
real package does on hosts without libamd_smi.so / ROCm.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

# amdsmi_wrapper.AMDSMI_STATUS_* (amdsmi_status_t)
STATUS = {"SUCCESS": 0, "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3, "API_FAILED": 7, "TIMEOUT": 8,
          "RETRY": 9, "NO_PERM": 10, "IO": 12, "BUSY": 30, "NOT_FOUND": 31, "NOT_INIT": 32,
          "DRIVER_NOT_LOADED": 34, "NO_DATA": 40}
_INFO = {v: f"AMDSMI_STATUS_{k}" for k, v in STATUS.items()}


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _INFO.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self) -> str:
        return self.err_info

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, received: Any, expected: Any) -> None:
        super().__init__(f"Invalid parameter: {type(received)} expected {expected}")
        self.err_code = None


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1


class AmdSmiClkType(IntEnum):
    SYS = 0
    GFX = 0
    DF = 1
    DCEF = 2
    SOC = 3
    MEM = 4


@dataclass(frozen=True)
class Model:
    name: str
    current_power: bool = True  # current_socket_power is a number (MI300 and newer); else "N/A"
    edge_temp: bool = False  # MI300X has no EDGE sensor (code 2)
    cap_w: tuple[int, int, int] = (750, 0, 750)  # default, min, max power cap (W)
    vram_mb: int = 196_608
    idle_w: float = 140.0


MODELS = {
    "MI300X": Model("AMD Instinct MI300X", True, False, (750, 0, 750), 196_608, 140.0),
    "MI250X": Model("AMD Instinct MI250X", False, True, (560, 0, 560), 65_536, 90.0),
    "MI210": Model("AMD Instinct MI210", False, True, (300, 0, 300), 65_536, 40.0),
}


class Handle:
    """amdsmi_processor_handle stand-in (opaque)."""

    def __init__(self, gpu: SimAmdGpu) -> None:
        self._gpu = gpu


@dataclass
class SimAmdGpu:
    index: int
    model: Model
    clock: Callable[[], float]
    counter_period_s: float = 0.001
    phase_s: float = 0.0
    resolution_uj: float = 15.259
    counter_bits: int = 64
    counter_start_ticks: int = 0
    avg_window_s: float = 1.0
    t0: float = 0.0
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (from time, watts)
    pids: list[int] = field(default_factory=list)
    runs_caller: bool = False
    unsupported: set[str] = field(default_factory=set)
    open_error: int | None = None
    cap_uw: int = 0
    temp_c: float = 35.0

    @property
    def uuid(self) -> str:
        return f"{0x5f000000 + self.index:08x}-0000-1000-8000-{0xa1b2c3d40000 + self.index:012x}"

    @property
    def serial(self) -> str:
        return f"0x{0xD1CE000000000000 + self.index:016X}"

    @property
    def bdf(self) -> str:
        return f"0000:{0x0C + 0x10 * self.index:02x}:00.0"

    def power_at(self, t: float) -> float:
        w = self.model.idle_w
        for start, watts in self.timeline:
            if t >= start:
                w = watts
        return w

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact integral of the piecewise-constant power timeline."""
        if t1 <= t0:
            return 0.0
        pts = sorted({t0, t1, *(s for s, _ in self.timeline if t0 < s < t1)})
        return sum(self.power_at(a) * (b - a) for a, b in zip(pts, pts[1:]))

    def last_update(self, t: float) -> float:
        p = self.counter_period_s
        return self.t0 + self.phase_s + math.floor((t - self.t0 - self.phase_s) / p) * p

    def ticks(self, t: float) -> int:
        tu = self.last_update(t)
        return (self.counter_start_ticks + int(self.energy_j(self.t0, tu) * 1e6 / self.resolution_uj)) % (
            1 << self.counter_bits)


class SimAmdSmi(types.ModuleType):
    """The `amdsmi` module of a simulated AMD host."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiClkType = AmdSmiClkType

    def __init__(self, gpus: list[SimAmdGpu], clock: Callable[[], float] = time.perf_counter, *,
                 root: bool = False, init_error: int | None = None) -> None:
        super().__init__("amdsmi")
        self.gpus, self.clock, self.root, self.init_error = gpus, clock, root, init_error
        self.initialised = 0
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- test controls ----------------------------------------------------------------------------
    def set_power(self, index: int, watts: float, at: float | None = None) -> None:
        g = self.gpus[index]
        g.timeline.append((self.clock() if at is None else at, float(watts)))
        g.timeline.sort()

    def true_energy(self, index: int, t0: float, t1: float) -> float:
        return self.gpus[index].energy_j(t0, t1)

    # -- plumbing ---------------------------------------------------------------------------------
    def _gpu(self, h: Any, fn: str) -> SimAmdGpu:
        with self._lock:
            self.calls[fn] = self.calls.get(fn, 0) + 1
        if not self.initialised:
            raise AmdSmiLibraryException(STATUS["NOT_INIT"])
        if not isinstance(h, Handle):
            raise AmdSmiParameterException(h, Handle)
        g = h._gpu
        if g.open_error is not None:
            raise AmdSmiLibraryException(g.open_error)
        if fn in g.unsupported:
            raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
        return g

    # -- the API ----------------------------------------------------------------------------------
    def amdsmi_init(self, flag: int = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)
        self.initialised += 1

    def amdsmi_shut_down(self) -> None:
        self.initialised = max(0, self.initialised - 1)

    def amdsmi_get_processor_handles(self) -> list[Handle]:
        if not self.initialised:
            raise AmdSmiLibraryException(STATUS["NOT_INIT"])
        return [Handle(g) for g in self.gpus]

    def amdsmi_get_gpu_device_uuid(self, h: Any) -> str:
        return self._gpu(h, "amdsmi_get_gpu_device_uuid").uuid

    def amdsmi_get_gpu_device_bdf(self, h: Any) -> str:
        return self._gpu(h, "amdsmi_get_gpu_device_bdf").bdf

    def amdsmi_get_gpu_asic_info(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_gpu_asic_info")
        return {"market_name": g.model.name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": "0x74a1", "rev_id": "0x00", "asic_serial": g.serial,
                "oam_id": g.index, "num_compute_units": 304, "target_graphics_version": "gfx942"}

    def amdsmi_get_energy_count(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_energy_count")
        t = self.clock()
        acc = g.ticks(t)
        return {"power": acc, "energy_accumulator": acc, "counter_resolution": g.resolution_uj,
                "timestamp": int(g.last_update(t) * 1e9)}

    def amdsmi_get_power_info(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_power_info")
        t = self.clock()
        avg = g.energy_j(t - g.avg_window_s, t) / g.avg_window_s
        return {"current_socket_power": int(round(g.power_at(t))) if g.model.current_power else "N/A",
                "average_socket_power": int(round(avg)), "gfx_voltage": "N/A", "soc_voltage": 800,
                "mem_voltage": 1100, "power_limit": (g.cap_uw or g.model.cap_w[0] * 1_000_000) // 1_000_000}

    def amdsmi_get_temp_metric(self, h: Any, sensor_type: Any, metric: Any) -> int:
        g = self._gpu(h, "amdsmi_get_temp_metric")
        if not isinstance(sensor_type, AmdSmiTemperatureType):
            raise AmdSmiParameterException(sensor_type, AmdSmiTemperatureType)
        if sensor_type == AmdSmiTemperatureType.EDGE and not g.model.edge_temp:
            raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
        return int(g.temp_c + g.power_at(self.clock()) / 20)

    def amdsmi_get_gpu_activity(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_gpu_activity")
        busy = g.power_at(self.clock()) > 1.5 * g.model.idle_w
        return {"gfx_activity": 97 if busy else 0, "umc_activity": 40 if busy else 0, "mm_activity": "N/A"}

    def amdsmi_get_clock_info(self, h: Any, clk_type: Any) -> dict[str, Any]:
        self._gpu(h, "amdsmi_get_clock_info")
        clk = 1300 if clk_type == AmdSmiClkType.MEM else 2100
        return {"clk": clk, "min_clk": 500, "max_clk": clk, "clk_locked": False, "clk_deep_sleep": False}

    def amdsmi_get_gpu_vram_usage(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_gpu_vram_usage")
        return {"vram_total": g.model.vram_mb, "vram_used": 300 + 4096 * len(g.pids) + (8192 if g.runs_caller else 0)}

    def amdsmi_get_gpu_process_list(self, h: Any) -> list[dict[str, Any]]:
        g = self._gpu(h, "amdsmi_get_gpu_process_list")
        pids = list(g.pids) + ([os.getpid()] if g.runs_caller else [])
        return [{"name": "python3", "pid": p, "mem": 4 << 30, "engine_usage": {"gfx": 0, "enc": 0},
                 "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": 4 << 30}} for p in pids]

    def amdsmi_get_power_cap_info(self, h: Any) -> dict[str, Any]:
        g = self._gpu(h, "amdsmi_get_power_cap_info")
        default, lo, hi = (w * 1_000_000 for w in g.model.cap_w)
        return {"power_cap": g.cap_uw or default, "default_power_cap": default, "dpm_cap": 0,
                "min_power_cap": lo, "max_power_cap": hi}

    def amdsmi_set_power_cap(self, h: Any, sensor_ind: int, cap: int) -> None:
        g = self._gpu(h, "amdsmi_set_power_cap")
        if not isinstance(cap, int):
            raise AmdSmiParameterException(cap, int)
        if not self.root:
            raise AmdSmiLibraryException(STATUS["NO_PERM"])
        _, lo, hi = (w * 1_000_000 for w in g.model.cap_w)
        if not lo <= cap <= hi:
            raise AmdSmiLibraryException(STATUS["INVAL"])
        g.cap_uw = cap


def host(model: str = "MI300X", n: int = 8, *, clock: Callable[[], float] = time.perf_counter,
         watts: Iterable[float] | None = None, counter_period_s: float = 0.001, resolution_uj: float = 15.259,
         **kw: Any) -> SimAmdSmi:
    """A simulated AMD host of `n` GPUs of `model` (phases spread over one counter period)."""
    t0 = clock()
    gpus = [SimAmdGpu(i, MODELS[model], clock, counter_period_s=counter_period_s,
                      phase_s=counter_period_s * i / max(n, 1), resolution_uj=resolution_uj, t0=t0)
            for i in range(n)]
    sim = SimAmdSmi(gpus, clock, **kw)
    for i, w in enumerate(watts or []):
        sim.set_power(i, w, at=t0)
    return sim


def sim_folder(folder: Path, body: str = "", *, import_error: str | None = None) -> str:
    """A folder whose `amdsmi` is a simulated host built by `body` (which sets `sim`), for subprocesses
    (put it on PYTHONPATH). `import_error`: an exception class name the import raises instead."""
    folder.mkdir(parents=True, exist_ok=True)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    if import_error:
        text = f"raise {import_error}('ROCM_PATH')  # as amdsmi does without AMD's library\n"
    else:
        text = f"import sys\nsys.path.insert(0, {tests_dir!r})\nimport amd_sim\n{body}\nsys.modules[__name__] = sim\n"
    (folder / "amdsmi.py").write_text(text)
    return str(folder)


def install(monkeypatch: Any, sim: SimAmdSmi) -> SimAmdSmi:
    monkeypatch.setitem(sys.modules, "amdsmi", sim)
    return sim
