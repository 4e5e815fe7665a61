"""AMD GPUs through amdsmi (ROCm's `amdsmi` Python package, 6.x/7.x API): every amdsmi call of llem
lives here. `AmdGPU` implements `llem.device.common.GPU`; `session()` opens amdsmi and yields an `AmdHost`.

What llem reads (names and units as `amdsmi_interface.py` defines them):
- energy: `amdsmi_get_energy_count` → `energy_accumulator` (ticks) × `counter_resolution` (µJ per tick,
  e.g. 15.259), with the driver's `timestamp` (ns); a wrap (accumulator below its previous value) is
  unfolded at 2**32 or 2**64 ticks;
- power: `amdsmi_get_power_info` → `current_socket_power` (W, instantaneous; MI300 and newer) where it is
  a number, else `average_socket_power` (W, averaged by the SMU; MI200); "N/A" (0xFFFF) = not offered;
- temperature `amdsmi_get_temp_metric` (HOTSPOT, else EDGE; CURRENT), activity `amdsmi_get_gpu_activity`
  (`gfx_activity`, `umc_activity` %), clocks `amdsmi_get_clock_info` (GFX, MEM: `clk` MHz), memory
  `amdsmi_get_gpu_vram_usage` (`vram_used`, `vram_total` MB), processes `amdsmi_get_gpu_process_list`;
- power caps: `amdsmi_get_power_cap_info` (`power_cap`, `default_power_cap`, `min_power_cap`,
  `max_power_cap`, µW), `amdsmi_set_power_cap(handle, 0, µW)`.
Errors: `AmdSmiLibraryException.get_error_code()` → llem's kinds (NO_PERM 10 → permission, NOT_SUPPORTED 2
and NOT_YET_IMPLEMENTED 3 → not supported, NOT_FOUND 31 / DRIVER_NOT_LOADED 34 → lost, else read).

Importing amdsmi raises on hosts without AMD's library (ImportError, OSError, even KeyError from its
ctypes wrapper): that is "no AMD GPU" (DeviceUnavailable), never a crash.

Device identity (ROCm's GPU isolation rules): `ROCR_VISIBLE_DEVICES` (indices over every GPU, or UUIDs
`GPU-<hex>`) picks what the ROCm runtime exposes; `HIP_VISIBLE_DEVICES` (or, when it is unset,
`CUDA_VISIBLE_DEVICES`, HIP's alias) picks by index among those; the job's HIP ordinals count 0..n-1 in
that order. Parsing stops at the first entry that names nothing (noted). amdsmi lists GPUs in the same
(KFD / PCI) order as the runtime; where amdsmi offers `amdsmi_get_gpu_enumeration_info` its `hip_id`
orders them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llem.device.common import (
    AVERAGE,
    GPU,
    INSTANT,
    UNKNOWN,
    DeviceCallError,
    DeviceNotSupported,
    DeviceUnavailable,
    EnergyCounter,
    GpuHost,
    GpuProcess,
    PowerReading,
    host_session,
    start_library,
    unfold_wrap,
)
from llem.device.gpus import Gpu, Resolution, Visible, describe_error, parse_visible

VENDOR = "amd"
MB = 1024 * 1024
# amdsmi_status_t codes (amdsmi_wrapper.AMDSMI_STATUS_*), stable across 6.x/7.x.
STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED, STATUS_NO_PERM = 2, 3, 10
STATUS_NOT_FOUND, STATUS_DRIVER_NOT_LOADED = 31, 34
NA = "N/A"


def import_amdsmi() -> Any:
    """The amdsmi module, or DeviceUnavailable: it raises at import without AMD's library (any exception)."""
    try:
        import amdsmi
    except Exception as e:  # ImportError, OSError (libamd_smi.so), KeyError (ROCm path lookups), ...
        raise DeviceUnavailable(f"amdsmi cannot be imported ({describe_error(e)}): no AMD GPU library on this "
                                "host (install ROCm's amdsmi Python package on AMD GPU hosts)") from e
    return amdsmi


def _code(e: BaseException) -> Any:
    get = getattr(e, "get_error_code", None)
    if callable(get):
        with contextlib.suppress(Exception):
            return get()
    return getattr(e, "err_code", None)


def _kind(e: BaseException) -> str:
    """amdsmi's status code → llem's error kind (the one mapping for AMD)."""
    code = _code(e)
    if code == STATUS_NO_PERM:
        return "permission"
    if code in (STATUS_NOT_SUPPORTED, STATUS_NOT_YET_IMPLEMENTED):
        return "not_supported"
    if code in (STATUS_NOT_FOUND, STATUS_DRIVER_NOT_LOADED):
        return "lost"
    return "read"


def _errors(sm: Any) -> tuple[type[BaseException], ...]:
    base = getattr(sm, "AmdSmiException", None)
    return (base,) if isinstance(base, type) else (Exception,)


def _number(value: Any) -> float | None:
    """A reading, or None for amdsmi's "N/A" (and the raw 0xFFFF / 0xFFFFFFFF sentinels)."""
    if value is None or isinstance(value, str):
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    if value in (0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        return None
    return float(value)


class AmdGPU(GPU):
    """One AMD GPU behind an amdsmi processor handle."""

    vendor = VENDOR

    def __init__(self, sm: Any, handle: Any, index: int, uuid: str | None = None, name: str | None = None,
                 pci_bus_id: str | None = None, serial: str | None = None) -> None:
        super().__init__(index, uuid, name, pci_bus_id)
        self.sm, self.handle, self.serial = sm, handle, serial
        self._no: set[str] = set()
        self._lock = threading.Lock()  # the counter's wrap state: the sampler thread and the edge polls
        self._prev_raw: int | None = None
        self._offset = 0
        self._counter: bool | None = None
        self._power_key: str | None = None

    def _call(self, fn_name: str, *args: Any) -> Any:
        return self._vendor_call(self.sm, fn_name, args, _errors(self.sm), lambda e: (_kind(e), _code(e)),
                                 "this amdsmi lacks", cached_code=STATUS_NOT_SUPPORTED)

    def _enum(self, enum_name: str, member: str, default: int) -> Any:
        enum = getattr(self.sm, enum_name, None)
        return getattr(enum, member, default) if enum is not None else default

    # -- energy and power -------------------------------------------------------------------------
    def _energy(self) -> dict[str, Any]:
        return self._call("amdsmi_get_energy_count")

    def energy_counter_raw(self) -> int:
        d = self._energy()
        return int(d.get("energy_accumulator", d.get("power", 0)))  # "power": the pre-6.4 key

    def energy_counter(self) -> EnergyCounter:
        d = self._energy()
        raw = int(d.get("energy_accumulator", d.get("power", 0)))
        res_uj = _number(d.get("counter_resolution"))
        if not res_uj:
            raise DeviceNotSupported(VENDOR, "amdsmi_get_energy_count", None, "counter_resolution is N/A")
        with self._lock:
            self._offset = unfold_wrap(self._prev_raw, raw, self._offset)
            self._prev_raw = raw
            ticks = raw + self._offset
        ts = _number(d.get("timestamp"))
        return EnergyCounter(ticks * res_uj * 1e-6, ts * 1e-9 if ts else None, res_uj * 1e-6)

    def has_energy_counter(self) -> bool:
        if self._counter is None:
            try:
                self.energy_counter()
                self._counter = True
            except DeviceNotSupported:
                self._counter = False
        return self._counter

    def _power_info(self) -> dict[str, Any]:
        return self._call("amdsmi_get_power_info")

    def power_source(self) -> str:
        """current_socket_power (instantaneous) where it is a number, else average_socket_power."""
        if self._power_key is None:
            try:
                info = self._power_info()
            except DeviceNotSupported:
                info = {}
            if _number(info.get("current_socket_power")) is not None:
                self._power_key = "current_socket_power"
            elif _number(info.get("average_socket_power")) is not None:
                self._power_key = "average_socket_power"
            else:
                self._power_key = "none"
        return self._power_key

    def power_kind(self) -> str:
        return {"current_socket_power": INSTANT, "average_socket_power": AVERAGE}.get(self.power_source(), UNKNOWN)

    def power_w(self) -> PowerReading:
        key = self.power_source()
        if key == "none":
            raise DeviceNotSupported(VENDOR, "amdsmi_get_power_info", None, "socket power is N/A on this GPU")
        info = self._power_info()
        for k in (key, "average_socket_power"):
            w = _number(info.get(k))
            if w is not None:
                return PowerReading(w, INSTANT if k == "current_socket_power" else AVERAGE)
        raise DeviceNotSupported(VENDOR, "amdsmi_get_power_info", None, f"{key} is N/A")

    # -- thermal, clocks, memory, processes ---------------------------------------------------------
    def temperature_c(self) -> float:
        metric = self._enum("AmdSmiTemperatureMetric", "CURRENT", 0)
        last: DeviceCallError | None = None
        for sensor in ("HOTSPOT", "EDGE"):  # MI300X reports no EDGE temperature
            key = f"temp_{sensor}"
            if key in self._no:
                continue
            try:
                value = self._call("amdsmi_get_temp_metric", self._enum("AmdSmiTemperatureType", sensor, 0), metric)
            except DeviceNotSupported as e:
                self._no.discard("amdsmi_get_temp_metric")  # per sensor, not the whole function
                self._no.add(key)
                last = e
                continue
            t = _number(value)
            if t is not None:
                return t
        raise last or DeviceNotSupported(VENDOR, "amdsmi_get_temp_metric", None, "temperature is N/A")

    def _clock(self, kind: str) -> float:
        value = _number(self._call("amdsmi_get_clock_info", self._enum("AmdSmiClkType", kind, 0)).get("clk"))
        if value is None:
            raise DeviceNotSupported(VENDOR, "amdsmi_get_clock_info", None, f"{kind} clock is N/A")
        return value

    def sm_clock_mhz(self) -> float:
        return self._clock("GFX")

    def mem_clock_mhz(self) -> float:
        return self._clock("MEM")

    def _vram(self, key: str) -> int:
        value = _number(self._call("amdsmi_get_gpu_vram_usage").get(key))
        if value is None:
            raise DeviceNotSupported(VENDOR, "amdsmi_get_gpu_vram_usage", None, f"{key} is N/A")
        return int(value * MB)

    def memory_used_bytes(self) -> int:
        return self._vram("vram_used")

    def memory_total_bytes(self) -> int:
        return self._vram("vram_total")

    def memory_info(self) -> tuple[int, int]:
        return self.memory_used_bytes(), self.memory_total_bytes()

    def utilization_pct(self) -> tuple[float | None, float | None]:
        act = self._call("amdsmi_get_gpu_activity")
        return _number(act.get("gfx_activity")), _number(act.get("umc_activity"))

    def processes(self) -> list[GpuProcess]:
        """amdsmi_get_gpu_process_list: dicts (6.1+: pid, mem bytes), or handles (6.0: ask process_info)."""
        out = []
        for p in self._call("amdsmi_get_gpu_process_list"):
            if not isinstance(p, Mapping):
                p = self._call("amdsmi_get_gpu_process_info", p)
            mem = p.get("mem")
            out.append(GpuProcess(int(p["pid"]), int(mem) if isinstance(mem, int) else None))
        return out

    compute_processes = processes

    # -- settings -----------------------------------------------------------------------------------
    def _cap(self, key: str) -> float:
        value = _number(self._call("amdsmi_get_power_cap_info").get(key))
        if value is None:
            raise DeviceNotSupported(VENDOR, "amdsmi_get_power_cap_info", None, f"{key} is N/A")
        return value * 1e-6  # µW

    def power_limit_w(self) -> float:
        return self._cap("power_cap")

    def enforced_power_limit_w(self) -> float:
        return self._cap("power_cap")

    def default_power_limit_w(self) -> float:
        return self._cap("default_power_cap")

    def power_limit_constraints_w(self) -> tuple[float, float]:
        return self._cap("min_power_cap"), self._cap("max_power_cap")

    def set_power_limit_w(self, watts: float) -> None:
        self._call("amdsmi_set_power_cap", 0, int(round(watts * 1e6)))


class AmdHost(GpuHost):
    """An open amdsmi session: its GPUs, HIP/ROCR ↔ amdsmi mapping, processes."""

    vendor = VENDOR

    def __init__(self, sm: Any) -> None:
        super().__init__()
        self.sm = sm

    def _handles(self) -> list[Any]:
        try:
            return list(self.sm.amdsmi_get_processor_handles())
        except _errors(self.sm) as e:
            raise DeviceUnavailable(f"amdsmi lists no GPUs ({describe_error(e)})") from e

    def _read_records(self) -> list[Gpu]:
        """Every GPU amdsmi lists (identity records, `.device` the AmdGPU), in the runtime's order."""
        found = []
        for i, h in enumerate(self._handles()):
            probe = AmdGPU(self.sm, h, i)
            rec = Gpu(i, h)
            try:
                rec.uuid = str(probe._call("amdsmi_get_gpu_device_uuid"))
            except DeviceCallError as e:
                rec.error = e.detail
                found.append((i, rec))
                continue
            with contextlib.suppress(DeviceCallError):
                asic = probe._call("amdsmi_get_gpu_asic_info")
                rec.name = asic.get("market_name") if asic.get("market_name") not in (None, NA) else None
                serial = asic.get("asic_serial")
                probe.serial = serial if serial not in (None, NA) else None
            with contextlib.suppress(DeviceCallError):
                rec.pci_bus_id = str(probe._call("amdsmi_get_gpu_device_bdf"))
            order = i
            with contextlib.suppress(DeviceCallError):
                hip = _number(probe._call("amdsmi_get_gpu_enumeration_info").get("hip_id"))
                order = int(hip) if hip is not None else i
            probe.uuid, probe.name, probe.pci_bus_id = rec.uuid, rec.name, rec.pci_bus_id
            rec.device = probe
            found.append((order, rec))
        found.sort(key=lambda x: x[0])
        records = [r for _, r in found]
        for k, r in enumerate(records):  # the runtime's order is the index llem reports
            r.nvml_index = k
            if r.device is not None:
                r.device.index = k
        return records

    def count(self) -> int:
        return len(self._handles())

    def resolve_job(self, env: Mapping[str, str]) -> Resolution:
        return resolve(self.records(), env)

    def processes(self, visible: Sequence[Visible]) -> dict[str, set[int] | str]:
        out: dict[str, set[int] | str] = {}
        for v in visible:
            try:
                out[v.label] = {p.pid for p in v.gpu.device.processes()}
            except DeviceCallError as e:
                out[v.label] = e.detail
        return out

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.sm.amdsmi_shut_down()


def _match_uuid(token: str, gpu: Gpu) -> bool:
    """A ROCR UUID entry (`GPU-<hex>`) names `gpu` when it matches amdsmi's UUID or the ASIC serial."""
    t = token.lower()
    t = t[4:] if t.startswith("gpu-") else t
    names = [(gpu.uuid or "").lower()]
    serial = getattr(gpu.device, "serial", None)
    if serial:
        names.append(serial.lower().removeprefix("0x"))
    return bool(t) and any(n and (n == t or n.startswith(t) or n.replace("-", "") == t.replace("-", "")) for n in names)


def _pick(tokens: Sequence[str], lookup: Callable[[str], Gpu | None], miss: Callable[[str], str],
          notes: list[str]) -> list[Gpu]:
    """The GPUs `tokens` name, in order, each once. ROCm's rule: parsing stops at the first entry that names
    none (`miss(token)` noted)."""
    picked: list[Gpu] = []
    for token in tokens:
        hit = lookup(token)
        if hit is None:
            notes.append(miss(token))
            break
        if hit not in picked:
            picked.append(hit)
    return picked


def resolve(gpus: Sequence[Gpu], env: Mapping[str, str]) -> Resolution:
    """The job's HIP devices, in HIP order, mapped to amdsmi's GPUs (ROCR_VISIBLE_DEVICES, then
    HIP_VISIBLE_DEVICES, else CUDA_VISIBLE_DEVICES). Raises DeviceUnavailable when an entry names a GPU
    amdsmi could not open."""
    res = Resolution([], [], "ROCm", False)
    exposed = list(gpus)
    rocr = parse_visible(env.get("ROCR_VISIBLE_DEVICES"))
    if rocr is not None:
        def by_rocr(token: str) -> Gpu | None:
            if token.lstrip("-").isdigit():
                idx = int(token)
                return gpus[idx] if 0 <= idx < len(gpus) else None
            hits = [g for g in gpus if g.error is None and _match_uuid(token, g)]
            return hits[0] if len(hits) == 1 else None

        exposed = _pick(rocr, by_rocr, lambda token: f"ROCR_VISIBLE_DEVICES entry {token!r} names no GPU amdsmi "
                        "lists; the runtime exposes only the entries before it", res.notes)
    hip_name = "HIP_VISIBLE_DEVICES" if env.get("HIP_VISIBLE_DEVICES") is not None else "CUDA_VISIBLE_DEVICES"
    hip = parse_visible(env.get(hip_name))
    if hip_name == "HIP_VISIBLE_DEVICES" and env.get("CUDA_VISIBLE_DEVICES") not in (None, env.get("HIP_VISIBLE_DEVICES")):
        res.notes.append("HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are both set and differ: HIP uses "
                         "HIP_VISIBLE_DEVICES")
    chosen = exposed
    if hip is not None:
        def by_hip(token: str) -> Gpu | None:
            ok = token.lstrip("-").isdigit() and 0 <= int(token) < len(exposed)
            return exposed[int(token)] if ok else None

        chosen = _pick(hip, by_hip, lambda token: f"{hip_name} entry {token!r} is not a device index "
                       f"(0..{len(exposed) - 1}) of the GPUs the runtime exposes; HIP ignores it and every entry "
                       "after it", res.notes)
    for g in chosen:
        if g.error:
            raise DeviceUnavailable(f"the job's GPU {g.nvml_index} cannot be opened through amdsmi ({g.error})")
        res.visible.append(Visible(len(res.visible), g, str(g.nvml_index)))
    return res


def open_host() -> AmdHost:
    """amdsmi_init(INIT_AMD_GPUS); the caller calls `.shutdown()`. DeviceUnavailable without AMD GPUs."""
    sm = import_amdsmi()
    flags = getattr(getattr(sm, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
    start_library(lambda: sm.amdsmi_init(flags) if flags is not None else sm.amdsmi_init(), "amdsmi",
                  "no AMD GPU driver or GPU on this host")
    return AmdHost(sm)


def session() -> contextlib.AbstractContextManager[AmdHost]:
    """amdsmi_init … amdsmi_shut_down around an AmdHost; DeviceUnavailable when amdsmi cannot start."""
    return host_session(open_host)
