"""A GPU host simulator behind the real `pynvml` names (nvidia-ml-py 13.615), for hardware this machine lacks.

`SimNvml` is a module object installed as `sys.modules["pynvml"]`. Its exceptions, constants and structs
are nvidia-ml-py's own (loaded privately from the installed package), so `except pynvml.NVMLError`,
`NVMLError_NoPermission`, `NVMLLibraryMismatchError` and `c_nvmlFieldValue_t` behave as on a real host.
What it simulates, as unkindly as NVIDIA documents:

- per model (`MODELS`): V100 and GA100 (A100) report instantaneous `nvmlDeviceGetPowerUsage`; Ampere
  non-GA100 and Hopper (H100/H200) a 1-second average there, with instantaneous power only through
  `nvmlDeviceGetFieldValues([NVML_FI_DEV_POWER_INSTANT])` (per-value `timestamp` in µs); pre-Volta (P100)
  has no energy counter (NVML_ERROR_NOT_SUPPORTED);
- the energy counter (mJ, unsigned 64-bit, nonzero since "driver load") advances only every
  `counter_period_s` (~100 ms) at a per-GPU phase, holding the energy up to its last tick;
- a scriptable power timeline per GPU (`set_power`, `script`) on a controllable `SimClock` or the real
  `time.perf_counter`; temperature rising under load and decaying (first-order, `thermal_tau_s`);
- 8-GPU hosts, mixed models whose CUDA fastest-first and PCI orders differ, MIG instances (`MIG-…`
  UUIDs, parent lookup, no per-instance energy or power), handle errors (NO_PERMISSION, GPU_IS_LOST, at
  open or from a time on), an old driver without `_v3` process queries (NVMLLibraryMismatchError),
  bindings from which the deprecated `nvmlDeviceGetTemperature` / `…ClocksThrottleReasons` are gone,
  and compute-process lists per GPU or MIG instance;
- GPU settings as the driver keeps them (issue 20): power limits within `nvmlDeviceGetPowerManagementLimit
  Constraints`, locked SM / memory clocks among the supported ones, persistence mode; every setter raises
  `NVMLError_NoPermission` unless the host was built with `admin=True` (root); with `state_file` the
  settings (and the load timeline) live in a JSON file the simulator locks (fcntl), so every process of a
  test sees the same driver state, as on a real host (`tests/fakes/sim_site/pynvml.py` installs such a host as
  `pynvml` in subprocesses: put `tests/fakes/sim_site` first on PYTHONPATH and set LLEM_GPU_SIM_STATE);
- a power draw capped by the limit: a segment's watts are the demand at the top SM clock; the GPU runs at
  the highest clock allowed by the locked clocks and the limit, with power = idle + (demand - idle) ×
  (f / f_max)^3 and throughput ∝ f (`operating_point`): J/token is U-shaped in the SM clock;
- a cooling curve: after a load the temperature decays to idle (first-order, `thermal_tau_s`) and the
  power with it (`power_tau_s` > 0: idle + excess × e^(-t/τ), leakage of a hot die).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import math
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


def _load_real_pynvml() -> types.ModuleType:
    """The installed nvidia-ml-py module, loaded under a private name (tests replace `pynvml`)."""
    name = "_llem_real_pynvml"
    if name in sys.modules:
        return sys.modules[name]
    path = metadata.distribution("nvidia-ml-py").locate_file("pynvml.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


REAL = _load_real_pynvml()
NVMLError = REAL.NVMLError


class SimClock:
    """A clock tests move by hand: `clock()` reads it, `sleep(dt)` / `advance(dt)` move it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        with self._lock:
            self.t += max(0.0, dt)

    advance = sleep


@dataclass(frozen=True)
class Model:
    name: str
    arch: int
    cc: tuple[int, int]
    counter: bool = True  # nvmlDeviceGetTotalEnergyConsumption (Volta and newer)
    power_usage_avg_s: float = 0.0  # >0: nvmlDeviceGetPowerUsage is a moving average over this many s
    power_instant_field: bool = False  # NVML_FI_DEV_POWER_INSTANT answers
    idle_w: float = 60.0
    mig: bool = False


MODELS: dict[str, Model] = {
    "P100": Model("Tesla P100-PCIE-16GB", REAL.NVML_DEVICE_ARCH_PASCAL, (6, 0), counter=False, idle_w=30.0),
    "V100": Model("Tesla V100-SXM2-32GB", REAL.NVML_DEVICE_ARCH_VOLTA, (7, 0), idle_w=40.0),
    "A100": Model("NVIDIA A100-SXM4-80GB", REAL.NVML_DEVICE_ARCH_AMPERE, (8, 0), power_instant_field=True,
                  idle_w=55.0, mig=True),
    "A10": Model("NVIDIA A10", REAL.NVML_DEVICE_ARCH_AMPERE, (8, 6), power_usage_avg_s=1.0, power_instant_field=True,
                 idle_w=20.0),
    "H100": Model("NVIDIA H100 80GB HBM3", REAL.NVML_DEVICE_ARCH_HOPPER, (9, 0), power_usage_avg_s=1.0,
                  power_instant_field=True, idle_w=70.0, mig=True),
    "H200": Model("NVIDIA H200", REAL.NVML_DEVICE_ARCH_HOPPER, (9, 0), power_usage_avg_s=1.0,
                  power_instant_field=True, idle_w=75.0, mig=True),
}


def gpu_uuid(n: int) -> str:
    return f"GPU-{n:08x}-aaaa-bbbb-cccc-{n:012x}"


def mig_uuid(n: int, k: int) -> str:
    return f"MIG-{n:04x}{k:04x}-dddd-eeee-ffff-{n * 16 + k:012x}"


@dataclass
class SimMig:
    uuid: str
    parent: SimGpu
    gi: int
    ci: int
    profile: str = "3g.40gb"
    pids: list[int] = field(default_factory=list)
    runs_caller: bool = False


@dataclass
class SimGpu:
    index: int
    model: Model
    uuid: str
    pci_bus_id: str
    counter_period_s: float = 0.1
    tick_phase_s: float = 0.0  # ticks at t = phase + k × period
    counter_base_mj: int = 0
    pids: list[int] = field(default_factory=list)
    runs_caller: bool = False  # the process asking NVML (os.getpid() at query time) runs on this GPU
    migs: list[SimMig] = field(default_factory=list)
    open_error: int | None = None  # NVML error code for nvmlDeviceGetHandleByIndex / ByUUID
    lost_at: float | None = None  # from this time on every query raises GPU_IS_LOST
    ambient_c: float = 32.0
    c_per_w: float = 0.1  # steady temperature rise per W
    thermal_tau_s: float = 20.0
    reasons: int = 0
    persistence: int = 1
    power_limit_mw: int = 700_000
    # power timeline: (t_from, watts), piecewise constant, sorted
    segments: list[tuple[float, float]] = field(default_factory=list)
    # settings the driver keeps (issue 20)
    default_limit_mw: int = 700_000
    limit_range_mw: tuple[int, int] = (200_000, 700_000)
    sm_clocks_mhz: tuple[int, ...] = tuple(range(1980, 344, -15))  # supported, descending (as NVML lists)
    mem_clocks_mhz: tuple[int, ...] = (2619, 1593)
    locked_sm: tuple[int, int] | None = None
    locked_mem: tuple[int, int] | None = None
    # (t_from, limit W, highest allowed SM MHz or None): when the settings changed (energy integrates them)
    settings_log: list[tuple[float, float, float | None]] = field(default_factory=list)
    power_tau_s: float = 0.0  # >0: after a load, power decays to idle with this time constant

    @property
    def max_sm_mhz(self) -> float:
        return float(self.sm_clocks_mhz[0])

    def settings_at(self, t: float) -> tuple[float, float | None]:
        lim, hi = self.power_limit_mw / 1000.0, (self.locked_sm[1] if self.locked_sm else None)
        if self.settings_log:
            lim, hi = self.settings_log[0][1], self.settings_log[0][2]
            for t0, lw, h in self.settings_log:
                if t0 > t:
                    break
                lim, hi = lw, h
        return lim, hi

    def operating_point(self, demand_w: float, limit_w: float, locked_hi: float | None) -> tuple[float, float]:
        """(SM clock MHz, watts) of a GPU asked for `demand_w` (its draw at the top clock): the highest clock
        the lock and the power limit allow; power = idle + (demand - idle) × (f / f_max)^3."""
        idle, fmax = self.model.idle_w, self.max_sm_mhz
        f = min(fmax, locked_hi) if locked_hi else fmax
        if demand_w <= idle:  # idle: the clock drops, the power is what is asked
            return (min(f, 345.0), demand_w)
        dyn = demand_w - idle
        cap = max(limit_w - idle, 0.0)
        if dyn * (f / fmax) ** 3 > cap:  # the limit binds: the clock drops until the power fits
            f = fmax * (cap / dyn) ** (1 / 3)
        return f, idle + dyn * (f / fmax) ** 3

    def demand_at(self, t: float) -> float:
        p = self.segments[0][1]
        for t0, w in self.segments:
            if t0 > t:
                break
            p = w
        return p

    def _pieces(self, t_end: float) -> list[tuple[float, float, float]]:
        """(t0, t1, watts at the operating point) over merged demand and settings breakpoints up to t_end."""
        cuts = sorted({s[0] for s in self.segments} | {s[0] for s in self.settings_log if s[0] > self.segments[0][0]})
        out = []
        for i, t0 in enumerate(cuts):
            if t0 > t_end:  # a step exactly at t_end is in (zero long): power_at(t) sees it
                break
            t1 = min(cuts[i + 1] if i + 1 < len(cuts) else math.inf, t_end)
            lim, hi = self.settings_at(t0)
            out.append((t0, t1, self.operating_point(self.demand_at(t0), lim, hi)[1]))
        return out

    def power_at(self, t: float) -> float:
        lim, hi = self.settings_at(t)
        watts = self.operating_point(self.demand_at(t), lim, hi)[1]
        if self.power_tau_s > 0:
            watts += self._excess(t)
        return watts

    def _excess(self, t: float) -> float:
        """Leakage of a die still hot from a load: the drop at the last load→lighter step, decaying."""
        pieces = self._pieces(t)
        if len(pieces) >= 2 and pieces[-2][2] > pieces[-1][2]:
            return (pieces[-2][2] - pieces[-1][2]) * math.exp(-(t - pieces[-1][0]) / self.power_tau_s)
        return 0.0

    def energy_at(self, t: float) -> float:
        """Exact energy (J) from the timeline's start to t."""
        e = 0.0
        pieces = self._pieces(t)
        for k, (t0, t1, w) in enumerate(pieces):
            e += w * (t1 - t0)
            if self.power_tau_s > 0 and k and pieces[k - 1][2] > w:
                drop, tau = pieces[k - 1][2] - w, self.power_tau_s
                e += drop * tau * (1 - math.exp(-(t1 - t0) / tau))
        return e

    def last_tick(self, t: float) -> float:
        p = self.counter_period_s
        if p <= 0:
            return t
        return self.tick_phase_s + math.floor((t - self.tick_phase_s) / p) * p

    def counter_mj(self, t: float) -> int:
        return (self.counter_base_mj + int(self.energy_at(self.last_tick(t)) * 1000)) % (1 << 64)

    def temperature_at(self, t: float) -> float:
        pieces = self._pieces(t)
        temp = self.ambient_c + self.c_per_w * (pieces[0][2] if pieces else self.segments[0][1])
        for t0, t1, w in pieces:
            target = self.ambient_c + self.c_per_w * w
            temp = target + (temp - target) * math.exp(-(t1 - t0) / self.thermal_tau_s)
        return temp


class _Handle:
    """An opaque NVML handle (like c_nvmlDevice_t)."""

    def __init__(self, gpu: SimGpu, mig: SimMig | None = None) -> None:
        self.gpu, self.mig = gpu, mig


class _ProcInfo:
    """Fields of c_nvmlProcessInfo_t (v3)."""

    def __init__(self, pid: int, gi: int = 0xFFFFFFFF, ci: int = 0xFFFFFFFF) -> None:
        self.pid, self.usedGpuMemory, self.gpuInstanceId, self.computeInstanceId = pid, 1 << 30, gi, ci


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu, self.memory = gpu, memory


class _Mem:
    def __init__(self, used: int, total: int = 80 << 30) -> None:
        self.used, self.total, self.free = used, total, total - used


DEPRECATED = ("nvmlDeviceGetTemperature", "nvmlDeviceGetCurrentClocksThrottleReasons")


class SimNvml(types.ModuleType):
    """The `pynvml` module of a simulated host. Build one with `host(...)`."""

    def __init__(self, gpus: list[SimGpu], clock: Callable[[], float] = time.perf_counter, *,
                 driver: str = "580.65.06", cuda: int = 13000, removed: Iterable[str] = (),
                 old_driver: bool = False, init_error: int | None = None, admin: bool = False,
                 state_file: str | os.PathLike[str] | None = None) -> None:
        super().__init__("pynvml")
        for k, v in vars(REAL).items():  # constants, exceptions, structs: the real ones
            if k.startswith(("NVML_", "NVMLError", "NVMLLibraryMismatchError", "c_nvml", "nvmlPciInfo_t",
                             "nvmlTemperature_v1")):
                setattr(self, k, v)
        self.gpus = gpus
        self.clock = clock
        self.driver, self.cuda = driver, cuda
        self.old_driver = old_driver  # lacks the _v3 process queries and the newer V functions
        self.init_error = init_error
        self._absent = set(removed)
        if old_driver:
            self._absent.discard("nvmlDeviceGetTemperature")
        self.calls: dict[str, int] = {}
        self.initialised = 0
        self.shutdowns = 0
        self.admin = admin  # root: the setters work; else NVMLError_NoPermission, as for any user
        self.state_file = None if state_file is None else str(state_file)
        self._state_mtime: int | None = None
        if self.state_file is not None and not os.path.exists(self.state_file):
            self.save_state()

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "_absent"):
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return object.__getattribute__(self, name)

    # -- the simulation ----------------------------------------------------------------------------
    def set_power(self, index: int, watts: float, at: float | None = None) -> None:
        """From now (or `at`) on, GPU `index` draws `watts`."""
        g = self.gpus[index]
        t = self.clock() if at is None else at
        g.segments = [s for s in g.segments if s[0] < t] + [(t, float(watts))]

    def script(self, index: int, phases: Iterable[tuple[float, float]], start: float | None = None) -> float:
        """A timeline of (seconds, watts) from `start` (default now); returns its end time."""
        t = self.clock() if start is None else start
        for seconds, watts in phases:
            self.set_power(index, watts, at=t)
            t += seconds
        return t

    def true_energy(self, index: int, t0: float, t1: float) -> float:
        g = self.gpus[index]
        return g.energy_at(t1) - g.energy_at(t0)

    # -- driver state shared across processes (state_file) -----------------------------------------
    _MUTABLE = ("power_limit_mw", "locked_sm", "locked_mem", "persistence", "settings_log", "segments")

    def state(self) -> dict[str, Any]:
        models = [next(k for k, m in MODELS.items() if m == g.model) for g in self.gpus]
        return {"admin": self.admin, "models": models,
                "gpus": [{k: getattr(g, k) for k in self._MUTABLE} for g in self.gpus]}

    def save_state(self) -> None:
        assert self.state_file is not None
        tmp = f"{self.state_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.state(), f)
        os.replace(tmp, self.state_file)
        self._state_mtime = os.stat(self.state_file).st_mtime_ns

    def _load_state(self, force: bool = False) -> None:
        if self.state_file is None:
            return
        try:
            mtime = os.stat(self.state_file).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._state_mtime and not force:
            return
        with open(self.state_file) as f:
            state = json.load(f)
        self._state_mtime = mtime
        self.admin = bool(state.get("admin", self.admin))
        for g, gs in zip(self.gpus, state["gpus"]):
            g.power_limit_mw, g.persistence = int(gs["power_limit_mw"]), int(gs["persistence"])
            g.locked_sm = tuple(gs["locked_sm"]) if gs["locked_sm"] else None  # type: ignore[assignment]
            g.locked_mem = tuple(gs["locked_mem"]) if gs["locked_mem"] else None  # type: ignore[assignment]
            g.settings_log = [tuple(x) for x in gs["settings_log"]]  # type: ignore[misc]
            g.segments = [tuple(x) for x in gs["segments"]]  # type: ignore[misc]

    @contextlib.contextmanager
    def _driver(self) -> Any:
        """A settings change: under the state file's lock, on its latest content, saved after."""
        if self.state_file is None:
            yield
            return
        with open(f"{self.state_file}.lock", "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                self._load_state(force=True)
                yield
                self.save_state()
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    def set_load(self, index: int, watts: float, at: float | None = None) -> None:
        """`set_power`, through the shared driver state (a job 'running' on the simulated GPU)."""
        with self._driver():
            self.set_power(index, watts, at)

    def _log_settings(self, g: SimGpu) -> None:
        t = self.clock()
        if not g.settings_log:
            g.settings_log = [(g.segments[0][0], g.default_limit_mw / 1000.0, None)]
        g.settings_log = [x for x in g.settings_log if x[0] < t] + [
            (t, g.power_limit_mw / 1000.0, float(g.locked_sm[1]) if g.locked_sm else None)]

    def _admin(self, h: _Handle) -> SimGpu:
        g = self._whole(h)
        if not self.admin:
            raise self._err(REAL.NVML_ERROR_NO_PERMISSION)
        return g

    # -- plumbing ------------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _err(self, code: int) -> NVMLError:
        return NVMLError(code)  # maps to the real subclass, e.g. NVMLError_GpuIsLost

    def _check(self, h: _Handle) -> SimGpu:
        if not self.initialised:
            raise self._err(REAL.NVML_ERROR_UNINITIALIZED)
        self._load_state()
        g = h.gpu
        if g.lost_at is not None and self.clock() >= g.lost_at:
            raise self._err(REAL.NVML_ERROR_GPU_IS_LOST)
        return g

    def _whole(self, h: _Handle) -> SimGpu:
        """A query NVML answers only for the whole GPU (energy, power): NOT_SUPPORTED on a MIG handle."""
        g = self._check(h)
        if h.mig is not None:
            raise self._err(REAL.NVML_ERROR_NOT_SUPPORTED)
        return g

    # -- init ------------------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self._err(self.init_error)
        self.initialised += 1

    nvmlInitWithFlags = None  # set below (same behaviour)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1
        self.initialised = max(0, self.initialised - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    # -- handles ---------------------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        if not self.initialised:
            raise self._err(REAL.NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not self.initialised:
            raise self._err(REAL.NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(self.gpus):
            raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
        g = self.gpus[index]
        if g.open_error is not None:
            raise self._err(g.open_error)
        h = _Handle(g)
        self._check(h)
        return h

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in self.gpus:
            if g.uuid == uuid:
                if g.open_error is not None:
                    raise self._err(g.open_error)
                return _Handle(g)
            for m in g.migs:
                if m.uuid == uuid:
                    return _Handle(g, m)
        raise self._err(REAL.NVML_ERROR_NOT_FOUND)  # full UUIDs only: NVML does not match prefixes

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        self._check(h)
        return h.mig.uuid if h.mig else h.gpu.uuid

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        g = self._check(h)
        return f"{g.model.name} MIG {h.mig.profile}" if h.mig else g.model.name

    def nvmlDeviceGetIndex(self, h: _Handle) -> int:
        return self._whole(h).index

    def nvmlDeviceGetPciInfo(self, h: _Handle) -> Any:
        g = self._check(h)
        info = REAL.nvmlPciInfo_t()
        info.busId = g.pci_bus_id.encode()
        info.bus = int(g.pci_bus_id.split(":")[1], 16)
        return info

    def nvmlDeviceGetCudaComputeCapability(self, h: _Handle) -> tuple[int, int]:
        return self._check(h).model.cc

    def nvmlDeviceGetArchitecture(self, h: _Handle) -> int:
        return self._check(h).model.arch

    # -- MIG -------------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, h: _Handle) -> list[int]:
        g = self._whole(h)
        if not g.model.mig:
            raise self._err(REAL.NVML_ERROR_NOT_SUPPORTED)
        on = REAL.NVML_DEVICE_MIG_ENABLE if g.migs else REAL.NVML_DEVICE_MIG_DISABLE
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Handle) -> int:
        return 7 if self._whole(h).model.mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, index: int) -> _Handle:
        g = self._whole(h)
        if index >= len(g.migs):
            raise self._err(REAL.NVML_ERROR_NOT_FOUND)
        return _Handle(g, g.migs[index])

    def nvmlDeviceIsMigDeviceHandle(self, h: _Handle) -> bool:
        return h.mig is not None

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: _Handle) -> _Handle:
        if h.mig is None:
            raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(self._check(h))

    def nvmlDeviceGetGpuInstanceId(self, h: _Handle) -> int:
        if h.mig is None:
            raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
        return h.mig.gi

    def nvmlDeviceGetComputeInstanceId(self, h: _Handle) -> int:
        if h.mig is None:
            raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
        return h.mig.ci

    # -- energy and power ------------------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Handle) -> int:
        self._count("energy")
        g = self._whole(h)
        if not g.model.counter:
            raise self._err(REAL.NVML_ERROR_NOT_SUPPORTED)
        return g.counter_mj(self.clock())

    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        self._count("power_usage")
        g = self._whole(h)
        t = self.clock()
        avg = g.model.power_usage_avg_s
        watts = g.power_at(t) if avg <= 0 else (g.energy_at(t) - g.energy_at(t - avg)) / avg
        return int(watts * 1000)

    def nvmlDeviceGetFieldValues(self, h: _Handle, fieldIds: list[Any]) -> Any:
        self._count("field_values")
        g = self._check(h)
        values = (REAL.c_nvmlFieldValue_t * len(fieldIds))()
        t = self.clock()
        for i, fid in enumerate(fieldIds):
            fid, scope = (fid if isinstance(fid, tuple) else (fid, 0))
            v = values[i]
            v.fieldId, v.scopeId = fid, scope
            v.timestamp = int(t * 1e6)
            v.latencyUsec = 0
            v.nvmlReturn = REAL.NVML_SUCCESS
            if h.mig is not None:
                v.nvmlReturn = REAL.NVML_ERROR_NOT_SUPPORTED
            elif fid == REAL.NVML_FI_DEV_POWER_INSTANT and g.model.power_instant_field:
                v.valueType, v.value.uiVal = REAL.NVML_VALUE_TYPE_UNSIGNED_INT, int(g.power_at(t) * 1000)
            elif fid == REAL.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION and g.model.counter:
                v.valueType, v.value.ullVal = REAL.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, g.counter_mj(t)
            else:
                v.nvmlReturn = REAL.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetEnforcedPowerLimit(self, h: _Handle) -> int:
        return self._whole(h).power_limit_mw

    # -- settings (root only) ----------------------------------------------------------------------------
    def nvmlDeviceGetPowerManagementLimit(self, h: _Handle) -> int:
        return self._whole(h).power_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: _Handle) -> int:
        return self._whole(h).default_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: _Handle) -> list[int]:
        return list(self._whole(h).limit_range_mw)

    def nvmlDeviceSetPowerManagementLimit(self, h: _Handle, limit: int) -> None:
        with self._driver():
            g = self._admin(h)
            lo, hi = g.limit_range_mw
            if not lo <= int(limit) <= hi:
                raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
            g.power_limit_mw = int(limit)
            self._log_settings(g)

    def nvmlDeviceGetSupportedMemoryClocks(self, h: _Handle) -> list[int]:
        return list(self._whole(h).mem_clocks_mhz)

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: _Handle, memoryClockMHz: int) -> list[int]:
        g = self._whole(h)
        if int(memoryClockMHz) not in g.mem_clocks_mhz:
            raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
        return list(g.sm_clocks_mhz)

    def nvmlDeviceGetMaxClockInfo(self, h: _Handle, kind: int) -> int:
        g = self._check(h)
        return g.sm_clocks_mhz[0] if kind in (REAL.NVML_CLOCK_SM, REAL.NVML_CLOCK_GRAPHICS) else g.mem_clocks_mhz[0]

    def nvmlDeviceSetGpuLockedClocks(self, h: _Handle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:
        with self._driver():
            g = self._admin(h)
            if not (min(g.sm_clocks_mhz) <= minGpuClockMHz <= maxGpuClockMHz <= max(g.sm_clocks_mhz)):
                raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
            g.locked_sm = (int(minGpuClockMHz), int(maxGpuClockMHz))
            self._log_settings(g)

    def nvmlDeviceResetGpuLockedClocks(self, h: _Handle) -> None:
        with self._driver():
            g = self._admin(h)
            g.locked_sm = None
            self._log_settings(g)

    def nvmlDeviceSetMemoryLockedClocks(self, h: _Handle, minMemClockMHz: int, maxMemClockMHz: int) -> None:
        with self._driver():
            g = self._admin(h)
            if not (min(g.mem_clocks_mhz) <= minMemClockMHz <= maxMemClockMHz <= max(g.mem_clocks_mhz)):
                raise self._err(REAL.NVML_ERROR_INVALID_ARGUMENT)
            g.locked_mem = (int(minMemClockMHz), int(maxMemClockMHz))

    def nvmlDeviceResetMemoryLockedClocks(self, h: _Handle) -> None:
        with self._driver():
            self._admin(h).locked_mem = None

    def nvmlDeviceSetPersistenceMode(self, h: _Handle, mode: int) -> None:
        with self._driver():
            self._admin(h).persistence = int(mode)

    # -- thermal, clocks, state ------------------------------------------------------------------------
    def nvmlDeviceGetTemperature(self, h: _Handle, sensor: int) -> int:
        return int(self._check(h).temperature_at(self.clock()))

    def nvmlDeviceGetTemperatureV(self, h: _Handle, sensor: int, version: int = REAL.nvmlTemperature_v1) -> int:
        if self.old_driver:
            raise self._err(REAL.NVML_ERROR_FUNCTION_NOT_FOUND)
        return int(self._check(h).temperature_at(self.clock()))

    def nvmlDeviceGetClockInfo(self, h: _Handle, kind: int) -> int:
        g = self._check(h)
        if kind == REAL.NVML_CLOCK_MEM:
            return g.locked_mem[1] if g.locked_mem else g.mem_clocks_mhz[0]
        if g.locked_sm is None and g.power_limit_mw == g.default_limit_mw and not g.settings_log:
            return 1980  # as before settings existed: the top clock
        t = self.clock()
        lim, hi = g.settings_at(t)
        return int(round(g.operating_point(g.demand_at(t), lim, hi)[0]))

    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> _Util:
        g = self._whole(h)
        busy = g.power_at(self.clock()) > 1.5 * g.model.idle_w
        return _Util(97 if busy else 0, 40 if busy else 0)

    def nvmlDeviceGetMemoryInfo(self, h: _Handle) -> _Mem:
        self._check(h)
        return _Mem(10 << 30)

    def _reasons(self, h: _Handle) -> int:
        g = self._check(h)
        t = self.clock()
        lim, hi = g.settings_at(t)
        demand = g.demand_at(t)
        f_free = min(g.max_sm_mhz, hi) if hi else g.max_sm_mhz
        capped = demand > g.model.idle_w and g.operating_point(demand, lim, hi)[0] < f_free - 1e-6
        return g.reasons | (REAL.nvmlClocksEventReasonSwPowerCap if capped else 0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: _Handle) -> int:
        if self.old_driver:
            raise self._err(REAL.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._reasons(h)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: _Handle) -> int:
        return self._reasons(h)

    def nvmlDeviceGetPersistenceMode(self, h: _Handle) -> int:
        return self._whole(h).persistence

    # -- processes -------------------------------------------------------------------------------------
    def nvmlDeviceGetComputeRunningProcesses(self, h: _Handle) -> list[_ProcInfo]:
        if self.old_driver:  # what @throwOnVersionMismatch raises when the driver lacks the _v3 symbol
            raise REAL.NVMLLibraryMismatchError(
                "Unversioned function called and the pyNVML version does not match the NVML lib version. Either "
                "use matching pyNVML and NVML lib versions or use a versioned function such as "
                "nvmlDeviceGetComputeRunningProcesses_v2")
        g = self._check(h)

        def pids(x: SimGpu | SimMig) -> list[int]:
            return [*x.pids, *([os.getpid()] if x.runs_caller else [])]

        if h.mig is not None:
            return [_ProcInfo(p, h.mig.gi, h.mig.ci) for p in pids(h.mig)]
        return [_ProcInfo(p) for p in pids(g)] + [_ProcInfo(p, m.gi, m.ci) for m in g.migs for p in pids(m)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: _Handle) -> list[_ProcInfo]:
        self._check(h)
        return []


SimNvml.nvmlInitWithFlags = lambda self, flags=0: SimNvml.nvmlInit(self)  # type: ignore[assignment]


def host(models: Iterable[str] | str = "H100", n: int | None = None, *, clock: Callable[[], float] = time.perf_counter,
         watts: float | Iterable[float] | None = None, counter_period_s: float = 0.1,
         pci_order: Iterable[int] | None = None, **kw: Any) -> SimNvml:
    """A simulated host: `host("H100", 8)` or mixed `host(["V100", "A100"])`. NVML enumerates in PCI bus
    order; `pci_order` permutes which model sits on which bus. Each GPU idles at its model's idle power
    (or `watts`) from the clock's now; counter ticks get distinct phases."""
    names = [models] * (n or 1) if isinstance(models, str) else list(models)
    t0 = clock()
    powers = list(watts) if isinstance(watts, Iterable) else [watts] * len(names)
    power_tau_s = float(kw.pop("power_tau_s", 0.0))
    thermal_tau_s = kw.pop("thermal_tau_s", None)
    gpus = []
    for i, name in enumerate(names):
        model = MODELS[name]
        g = SimGpu(i, model, gpu_uuid(i), f"00000000:{0x18 + 0x10 * i:02X}:00.0", counter_period_s=counter_period_s,
                   tick_phase_s=t0 + (0.037 * (i + 1)) % max(counter_period_s, 1e-9),
                   counter_base_mj=987_654_321 + 1_000_003 * i)
        g.segments = [(t0 - 3600.0, float(powers[i] if powers[i] is not None else model.idle_w))]
        g.power_tau_s = power_tau_s
        if thermal_tau_s is not None:
            g.thermal_tau_s = float(thermal_tau_s)
        gpus.append(g)
    return SimNvml(gpus, clock, **kw)


def add_migs(sim: SimNvml, index: int, count: int = 2, profile: str = "3g.40gb") -> list[SimMig]:
    g = sim.gpus[index]
    g.migs = [SimMig(mig_uuid(index, k), g, gi=k + 1, ci=0, profile=profile) for k in range(count)]
    return g.migs


def from_state(state_file: str, **kw: Any) -> SimNvml:
    """The host whose driver state lives in `state_file` (made by `host(..., state_file=...)` in a test),
    as another process opens it: same GPUs, settings and load timeline, on the real clock."""
    with open(state_file) as f:
        models = json.load(f)["models"]
    sim = host(models, **kw)
    sim.state_file = state_file
    sim._load_state(force=True)
    return sim
