"""NVIDIA GPUs through NVML (nvidia-ml-py's `pynvml` module): energy counter plus a power sampler.

Energy per GPU is the delta of `nvmlDeviceGetTotalEnergyConsumption` (mJ, Volta and newer) between
the window's edges. Beside it, a sampler thread records power, temperature, SM/memory clocks,
utilisation, memory used and clock-event (throttle) reasons at `energy.sample_hz`; their trapezoidal
integral is reported next to the counter, and is the energy on GPUs without the counter.

Which GPUs: those CUDA sees. CUDA_VISIBLE_DEVICES entries are matched to NVML devices by UUID
(`GPU-…` prefixes, `MIG-…`), integers by NVML index (PCI bus order; see README). Every visible GPU
is measured (or `energy.gpu_indices`), per GPU and in total.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable
from llem.energy.sampler import Sampler, cumulative_trapezoid, trapezoid

# NVML's energy counter advances every ~20-100 ms depending on the GPU; llem assumes the slow end.
COUNTER_UPDATE_PERIOD_S = 0.1

# Clock event ("throttle") reasons: NVML bit → name. Bits are stable across nvml versions.
CLOCK_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The ones that mean the GPU ran slower than it could for thermal or power reasons.
THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown")


def import_pynvml() -> Any:
    """nvidia-ml-py installs the `pynvml` module (the old `pynvml` package is deprecated)."""
    try:
        import pynvml
    except ImportError as e:
        raise MeterUnavailable("NVML bindings missing: pip install nvidia-ml-py") from e
    return pynvml


def resolve_visible(cvd: str | None, uuids: list[str]) -> tuple[list[int | str], list[str]]:
    """NVML devices CUDA will see, in CUDA order: an NVML index, or a MIG UUID to resolve.

    Mirrors CUDA's parsing: entries are integers or (prefixes of) UUIDs; parsing stops at the first
    entry that matches nothing (CUDA ignores the rest), and duplicates are dropped.
    """
    notes: list[str] = []
    if cvd is None:
        return list(range(len(uuids))), notes
    out: list[int | str] = []
    for raw in cvd.split(","):
        token = raw.strip()
        if not token:
            break
        if token.lstrip("-").isdigit():
            idx = int(token)
            if not 0 <= idx < len(uuids):
                notes.append(f"CUDA_VISIBLE_DEVICES entry {token!r} is not a GPU index (0..{len(uuids) - 1}); "
                             "CUDA ignores it and every entry after it")
                break
            entry: int | str = idx
        elif token.upper().startswith("MIG-"):
            entry = token
        else:
            matches = [i for i, u in enumerate(uuids)
                       if u.lower().startswith(token.lower()) or u.lower()[4:].startswith(token.lower())]
            if len(matches) != 1:
                what = "matches no GPU UUID" if not matches else "matches several GPU UUIDs"
                notes.append(f"CUDA_VISIBLE_DEVICES entry {token!r} {what}; CUDA ignores it and every entry after it")
                break
            entry = matches[0]
        if entry not in out:
            out.append(entry)
    return out, notes


@dataclass
class _Gpu:
    cuda_index: int
    handle: Any
    uuid: str
    name: str
    nvml_index: int | None
    has_counter: bool = True
    mig: str | None = None  # the MIG UUID when CUDA sees a MIG instance of this GPU
    power_limit_w: float | None = None
    persistence_mode: str | None = None
    unsupported: set[str] = field(default_factory=set)

    @property
    def device(self) -> str:
        return f"gpu:{self.cuda_index}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def own_pids() -> set[int]:
    """This process and its descendants (vLLM's engine core and workers run as child processes)."""
    pid = os.getpid()
    try:
        import psutil

        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except Exception:
        pass
    pids, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                todo.extend(k for k in kids if k not in pids)
                pids.update(kids)
        except OSError:
            continue
    return pids


def reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    return [name for bit, name in CLOCK_REASONS.items() if mask & bit]


class NvmlMeter(Meter):
    name = "nvml"
    update_period_s = COUNTER_UPDATE_PERIOD_S

    def __init__(self, sample_hz: float = 10.0, gpu_indices: list[int] | None = None) -> None:
        self.sample_hz = sample_hz
        self.gpu_indices = gpu_indices
        self.nv: Any = None
        self.gpus: list[_Gpu] = []
        self.notes: list[str] = []
        self._sampler: Sampler | None = None
        self._t0 = 0.0
        self._initialised = False

    # -- setup (before the model loads) -----------------------------------------------------------
    def probe(self) -> None:
        if self._initialised:
            return
        nv = import_pynvml()
        try:
            nv.nvmlInit()
        except Exception as e:
            raise MeterUnavailable(f"NVML could not start ({type(e).__name__}: {e}): no NVIDIA driver or GPU "
                                   "on this host") from e
        self.nv, self._initialised = nv, True
        try:
            self._open_devices()
        except BaseException:
            self.close()
            raise

    def _open_devices(self) -> None:
        nv = self.nv
        count = nv.nvmlDeviceGetCount()
        if count == 0:
            raise MeterUnavailable("NVML reports no GPUs")
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        entries, self.notes = resolve_visible(cvd, uuids)
        if not entries:
            raise MeterUnavailable(f"no GPU visible to CUDA (CUDA_VISIBLE_DEVICES={cvd!r})")
        gpus: list[_Gpu] = []
        for cuda_index, entry in enumerate(entries):
            if isinstance(entry, int):
                h = handles[entry]
                gpus.append(_Gpu(cuda_index, h, uuids[entry], _text(nv.nvmlDeviceGetName(h)), entry))
            else:  # MIG instance: NVML's counter and power are the whole GPU's
                mig = nv.nvmlDeviceGetHandleByUUID(entry)
                parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
                uuid = _text(nv.nvmlDeviceGetUUID(parent))
                gpus.append(_Gpu(cuda_index, parent, uuid, _text(nv.nvmlDeviceGetName(parent)),
                                 uuids.index(uuid) if uuid in uuids else None, mig=entry))
                self.notes.append(f"gpu:{cuda_index} is MIG instance {entry}: NVML energy and power are the whole "
                                  f"GPU's ({uuid}), shared with every other instance on it")
        if cvd and any(t.strip().isdigit() for t in cvd.split(",")) \
                and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and len({g.name for g in gpus}) > 1:
            self.notes.append("CUDA_VISIBLE_DEVICES uses indices on a host with different GPU models: CUDA orders "
                              "them fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus; set "
                              "CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs so llem measures the GPUs the job uses")
        if self.gpu_indices is not None:
            bad = [i for i in self.gpu_indices if not 0 <= i < len(gpus)]
            if bad:
                raise MeterUnavailable(f"energy.gpu_indices={self.gpu_indices} is invalid: allowed CUDA ordinals "
                                       f"0..{len(gpus) - 1} (GPUs visible to this job)")
            gpus = [g for g in gpus if g.cuda_index in self.gpu_indices]
        for g in gpus:
            try:
                nv.nvmlDeviceGetTotalEnergyConsumption(g.handle)
            except nv.NVMLError:
                g.has_counter = False
            g.power_limit_w = self._query(g, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, scale=1e-3)
            mode = self._query(g, "persistence", nv.nvmlDeviceGetPersistenceMode)
            g.persistence_mode = None if mode is None else ("on" if mode == nv.NVML_FEATURE_ENABLED else "off")
        self.gpus = gpus

    def describe(self) -> str:
        parts = [f"{g.device} {g.name} ({'energy counter' if g.has_counter else 'power integral: no counter'})"
                 for g in self.gpus]
        return f"nvml: {len(self.gpus)} GPU(s): " + ", ".join(parts)

    def identities(self) -> dict[str, str]:
        return {g.device: g.mig or g.uuid for g in self.gpus}

    def temperatures(self) -> dict[str, float] | None:
        temps = {}
        for g in self.gpus:
            t = self._query(g, "temperature", self.nv.nvmlDeviceGetTemperature, self.nv.NVML_TEMPERATURE_GPU)
            if t is not None:
                temps[g.device] = float(t)
        return temps or None

    # -- reads ------------------------------------------------------------------------------------
    def _query(self, g: _Gpu, key: str, fn: Any, *args: Any, scale: float = 1.0) -> Any:
        """One NVML query; a 'not supported' answer is remembered so it is not asked again."""
        if key in g.unsupported:
            return None
        try:
            value = fn(g.handle, *args)
        except self.nv.NVMLError as e:
            permanent = (getattr(self.nv, "NVML_ERROR_NOT_SUPPORTED", 3),
                         getattr(self.nv, "NVML_ERROR_FUNCTION_NOT_FOUND", 13))
            if getattr(e, "value", None) in permanent:
                g.unsupported.add(key)
            return None
        except AttributeError:  # older bindings without this function
            g.unsupported.add(key)
            return None
        return value * scale if scale != 1.0 else value

    def _reasons(self, g: _Gpu) -> int | None:
        """Clock event reasons (new name) or, on older drivers, clocks throttle reasons (same bits)."""
        fn = getattr(self.nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None and "event_reasons" not in g.unsupported:
            value = self._query(g, "event_reasons", fn)
            if "event_reasons" not in g.unsupported:
                return value
        return self._query(g, "throttle_reasons", self.nv.nvmlDeviceGetCurrentClocksThrottleReasons)

    def _read(self, t: float) -> list[dict[str, Any]]:
        nv = self.nv
        rows = []
        for g in self.gpus:
            util = self._query(g, "utilization", nv.nvmlDeviceGetUtilizationRates)
            mem = self._query(g, "memory", nv.nvmlDeviceGetMemoryInfo)
            rows.append({
                "t_s": t,
                "device": g.device,
                "counter_mj": self._query(g, "counter", nv.nvmlDeviceGetTotalEnergyConsumption)
                if g.has_counter else None,
                "power_w": self._query(g, "power", nv.nvmlDeviceGetPowerUsage, scale=1e-3),
                "temperature_c": self._query(g, "temperature", nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
                "sm_clock_mhz": self._query(g, "sm_clock", nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
                "mem_clock_mhz": self._query(g, "mem_clock", nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
                "gpu_util_pct": None if util is None else util.gpu,
                "mem_util_pct": None if util is None else util.memory,
                "memory_used_bytes": None if mem is None else mem.used,
                "clock_event_reasons": self._reasons(g),
            })
        return rows

    # -- window -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.probe()
        self._sampler = Sampler(self._read, self.sample_hz, name="llem-nvml-sampler")
        self._sampler.start()  # first sample (counters included) is taken right here, synchronously
        self._t0 = self._sampler.rows[0]["t_s"] if self._sampler.rows else 0.0

    def stop(self) -> EnergyReading:
        assert self._sampler is not None, "stop() without start()"
        sampler, self._sampler = self._sampler, None
        rows = sampler.stop()  # closing sample first thing after the window's clock stopped
        others = self._other_processes()
        devices, series, warnings = [], [], list(self.notes)
        for g in self.gpus:
            dev_rows = [r for r in rows if r["device"] == g.device]
            energy, ts_rows, extra = _summarise(g, dev_rows, self._t0)
            if energy is None:
                warnings.append(f"{g.device}: no usable NVML energy or power readings in the window")
                continue
            extra["other_processes"] = others.get(g.device)
            devices.append(DeviceEnergy(g.device, "gpu", energy, extra.pop("method"), extra))
            series.extend(ts_rows)
        if sampler.errors:
            warnings.append(f"nvml sampler: {sampler.errors} failed reads (first: {sampler.first_error})")
        duration = (rows[-1]["t_s"] - rows[0]["t_s"]) if rows else 0.0
        samples = [d.extra["samples"] for d in devices]
        return EnergyReading(
            meter=self.name, measured=bool(devices), duration_s=duration, devices=devices,
            reason=None if devices else "NVML returned no energy or power readings", warnings=warnings,
            extra={"update_period_s": self.update_period_s, "sample_hz": self.sample_hz,
                   "samples_min": min(samples) if samples else 0, "t_start_s": self._t0,
                   "t_end_s": rows[-1]["t_s"] if rows else self._t0, "sampled": True},
            timeseries=series,
        )

    def _other_processes(self) -> dict[str, dict[str, Any]]:
        """Compute processes on each GPU that are not this job's (after the window: never inside it)."""
        fn = getattr(self.nv, "nvmlDeviceGetComputeRunningProcesses", None)
        if fn is None:
            return {}
        mine = own_pids()
        out: dict[str, dict[str, Any]] = {}
        for g in self.gpus:
            procs = self._query(g, "processes", fn)
            if procs is None:
                continue
            pids = sorted({int(p.pid) for p in procs})
            ours = [p for p in pids if p in mine]
            out[g.device] = {"pids": pids, "others": [p for p in pids if p not in mine],
                             # In a container NVML may list host PIDs: none of ours then shows up.
                             "attributable": bool(ours) or not pids}
        return out

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._initialised and self.nv is not None:
            with contextlib.suppress(Exception):
                self.nv.nvmlShutdown()
        self._initialised = False


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def _summarise(g: _Gpu, rows: list[dict[str, Any]], t0: float) -> tuple[float | None, list[dict[str, Any]], dict[str, Any]]:
    """Energy (counter, else integral), timeseries rows and the device's thermal/clock facts."""
    p_rows = [r for r in rows if r["power_w"] is not None]
    integral = trapezoid([r["t_s"] for r in p_rows], [r["power_w"] for r in p_rows]) if len(p_rows) > 1 else None
    c_rows = [r for r in rows if r["counter_mj"] is not None]
    counter = (c_rows[-1]["counter_mj"] - c_rows[0]["counter_mj"]) / 1000.0 if len(c_rows) > 1 else None
    if counter is not None and counter < 0:  # driver reload mid-window: the counter restarted
        counter = None
    energy = counter if counter is not None else integral
    method = "nvml_counter" if counter is not None else "nvml_power_integral"
    # Cumulative energy per sample: counter where available (true energy), else the running integral.
    if counter is not None:
        base = c_rows[0]["counter_mj"]
        cum = {id(r): (r["counter_mj"] - base) / 1000.0 for r in c_rows}
    elif p_rows:
        cum = dict(zip(map(id, p_rows), cumulative_trapezoid([r["t_s"] for r in p_rows], [r["power_w"] for r in p_rows])))
    else:
        cum = {}
    series = []
    for r in rows:
        names = reason_names(r["clock_event_reasons"])
        series.append({
            "t_s": r["t_s"], "elapsed_s": r["t_s"] - t0, "meter": "nvml", "device": g.device, "kind": "gpu",
            "power_w": r["power_w"], "energy_j": cum.get(id(r)), "temperature_c": r["temperature_c"],
            "sm_clock_mhz": r["sm_clock_mhz"], "mem_clock_mhz": r["mem_clock_mhz"],
            "gpu_util_pct": r["gpu_util_pct"], "mem_util_pct": r["mem_util_pct"],
            "memory_used_bytes": r["memory_used_bytes"], "clock_event_reasons": r["clock_event_reasons"],
            "throttle": ",".join(n for n in names if n in THROTTLE_REASONS) or None,
        })
    throttle_s: dict[str, float] = {}
    for a, b in zip(rows, rows[1:]):
        for name in reason_names(a["clock_event_reasons"]):
            if name in THROTTLE_REASONS:
                throttle_s[name] = throttle_s.get(name, 0.0) + (b["t_s"] - a["t_s"])
    temps = [float(r["temperature_c"]) for r in rows if r["temperature_c"] is not None]
    duration = rows[-1]["t_s"] - rows[0]["t_s"] if rows else 0.0
    gaps = [b["t_s"] - a["t_s"] for a, b in zip(rows, rows[1:])]
    extra: dict[str, Any] = {
        "method": method,
        "uuid": g.uuid, "name": g.name, "nvml_index": g.nvml_index, "cuda_index": g.cuda_index, "mig": g.mig,
        "counter_j": counter, "integral_j": integral,
        "integral_vs_counter_pct": (integral - counter) / counter * 100 if counter and integral is not None else None,
        "samples": len(rows), "sample_interval_s": statistics.median(gaps) if gaps else None,
        "duration_s": duration,
        "mean_power_w": energy / duration if energy is not None and duration > 0 else None,
        "max_power_w": max((r["power_w"] for r in p_rows), default=None),
        "thermal": {
            "temperature_start_c": temps[0] if temps else None,
            "temperature_end_c": temps[-1] if temps else None,
            "temperature_max_c": max(temps) if temps else None,
            "temperature_drift_c": (max(temps) - temps[0]) if temps else None,
            "sm_clock_mhz": _stats([r["sm_clock_mhz"] for r in rows if r["sm_clock_mhz"] is not None]),
            "mem_clock_mhz": _stats([r["mem_clock_mhz"] for r in rows if r["mem_clock_mhz"] is not None]),
            "throttle_s": throttle_s,
            "power_limit_w": g.power_limit_w,
            "persistence_mode": g.persistence_mode,
        },
        "gpu_util_pct_mean": _mean([r["gpu_util_pct"] for r in rows]),
        "memory_used_bytes_max": max((r["memory_used_bytes"] for r in rows if r["memory_used_bytes"] is not None),
                                     default=None),
    }
    return energy, series, extra


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None
