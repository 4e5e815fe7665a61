"""NVIDIA GPUs through NVML (nvidia-ml-py's `pynvml` module): every NVML call of llem lives here.

`NvidiaGPU` implements `llem.device.common.GPU`; `session()` opens NVML and yields an `NvidiaHost`.
Device identity: CUDA devices ↔ NVML devices (`resolve`; CUDA's numbering rules are in
`llem.device.gpus`). MIG: NVML has no per-instance energy or power; a MIG instance is measured as its
parent GPU, once. NVML errors become llem exceptions in one place (`_kind` + `common.map_error`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from llem.device.common import (
    AVERAGE,
    GPU,
    INSTANT,
    UNKNOWN,
    DeviceCallError,
    DeviceError,
    DeviceNotSupported,
    DeviceUnavailable,
    EnergyCounter,
    GpuHost,
    GpuProcess,
    PowerReading,
    host_session,
    start_library,
)
from llem.device.gpus import Gpu, Resolution, Visible, describe_error, fastest_first, mixed_order_models, text

VENDOR = "nvidia"
POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, where the bindings lack the constant
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


def import_nvml() -> Any:
    """nvidia-ml-py installs the `pynvml` module (the old `pynvml` package is deprecated)."""
    try:
        import pynvml
    except ImportError as e:
        raise DeviceUnavailable("NVML bindings missing: pip install nvidia-ml-py") from e
    return pynvml


def nvml_errors(nv: Any) -> tuple[type[BaseException], ...]:
    """What NVML calls raise: NVMLError (and its per-code subclasses), plus NVMLLibraryMismatchError
    (an unversioned function whose `_vN` symbol the driver lacks; not an NVMLError subclass)."""
    out = [getattr(nv, "NVMLError", None), getattr(nv, "NVMLLibraryMismatchError", None)]
    return tuple(c for c in out if isinstance(c, type)) or (Exception,)


def _kind(nv: Any, e: BaseException) -> str:
    """NVML's code → llem's error kind (the one mapping for NVIDIA)."""
    nvml_error = getattr(nv, "NVMLError", None)
    if isinstance(nvml_error, type) and not isinstance(e, nvml_error):
        return "not_supported"  # NVMLLibraryMismatchError: the driver lacks this function's version
    code = getattr(e, "value", None)
    if code == getattr(nv, "NVML_ERROR_NO_PERMISSION", 4):
        return "permission"
    if code in (getattr(nv, "NVML_ERROR_NOT_SUPPORTED", 3), getattr(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)):
        return "not_supported"
    if code == getattr(nv, "NVML_ERROR_GPU_IS_LOST", 15):
        return "lost"
    return "read"


def averages_power_usage(cc: tuple[int, int] | None) -> bool | None:
    """NVIDIA: nvmlDeviceGetPowerUsage is a 1-second average on Ampere (except GA100, cc 8.0) and newer."""
    if cc is None:
        return None
    return tuple(cc) > (8, 0)


def reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    return [name for bit, name in CLOCK_REASONS.items() if mask & bit]


class NvidiaGPU(GPU):
    """One NVIDIA GPU (or MIG instance: processes and memory only) behind an NVML handle."""

    vendor = VENDOR

    def __init__(self, nv: Any, handle: Any, index: int, uuid: str | None = None, name: str | None = None,
                 pci_bus_id: str | None = None, compute_capability: tuple[int, int] | None = None) -> None:
        super().__init__(index, uuid, name, pci_bus_id)
        self.nv, self.handle, self.compute_capability = nv, handle, compute_capability
        self._no: set[str] = set()  # NVML functions this GPU answered NOT_SUPPORTED (asked no more)
        self._counter: bool | None = None
        self._power_source: str | None = None

    def _call(self, fn_name: str, *args: Any) -> Any:
        return self._vendor_call(self.nv, fn_name, args, nvml_errors(self.nv),
                                 lambda e: (_kind(self.nv, e), getattr(e, "value", None)), "these NVML bindings lack")

    def _first(self, *calls: tuple[Any, ...]) -> Any:
        """The first of several equivalent calls (new name, then deprecated) that is supported."""
        last: DeviceCallError | None = None
        for fn_name, *args in calls:
            try:
                return self._call(fn_name, *args)
            except DeviceNotSupported as e:
                last = e
        assert last is not None
        raise last

    # -- energy and power -------------------------------------------------------------------------
    def energy_counter_raw(self) -> int:
        """nvmlDeviceGetTotalEnergyConsumption: mJ since the driver loaded (Volta and newer)."""
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption"))

    def energy_counter(self) -> EnergyCounter:
        return EnergyCounter(self.energy_counter_raw() / 1000.0, None, 1e-3)

    def has_energy_counter(self) -> bool:
        """Whether the counter answers; NO_PERMISSION, GPU_IS_LOST and read failures propagate."""
        if self._counter is None:
            try:
                self.energy_counter_raw()
                self._counter = True
            except DeviceNotSupported:
                self._counter = False
        return self._counter

    def _instant_field(self) -> Any:
        fid = getattr(self.nv, "NVML_FI_DEV_POWER_INSTANT", POWER_INSTANT)
        value = self._call("nvmlDeviceGetFieldValues", [fid])[0]
        return value if value.nvmlReturn == getattr(self.nv, "NVML_SUCCESS", 0) else None

    def power_source(self) -> str:
        """power_instant_field | power_usage_1s_average | power_usage_instant | power_usage (unknown)."""
        if self._power_source is None:
            try:
                instant = self._instant_field() is not None
            except (DeviceCallError, AttributeError, TypeError, IndexError):
                instant = False
            if instant:
                self._power_source = "power_instant_field"
            else:
                averaged = averages_power_usage(self.compute_capability)
                self._power_source = {True: "power_usage_1s_average", False: "power_usage_instant"}.get(
                    averaged, "power_usage")  # type: ignore[arg-type]
        return self._power_source

    def power_kind(self) -> str:
        return {"power_instant_field": INSTANT, "power_usage_instant": INSTANT,
                "power_usage_1s_average": AVERAGE}.get(self.power_source(), UNKNOWN)

    def power_w(self) -> PowerReading:
        if self.power_source() == "power_instant_field":
            value = self._instant_field()
            if value is not None:
                return PowerReading(value.value.uiVal * 1e-3, INSTANT)
        kind = self.power_kind()
        return PowerReading(self._call("nvmlDeviceGetPowerUsage") * 1e-3, AVERAGE if kind == AVERAGE else INSTANT)

    # -- thermal, clocks, memory, processes ---------------------------------------------------------
    def temperature_c(self) -> float:
        """nvmlDeviceGetTemperatureV, else the deprecated nvmlDeviceGetTemperature (gone in CUDA 14)."""
        sensor = getattr(self.nv, "NVML_TEMPERATURE_GPU", 0)
        return self._first(("nvmlDeviceGetTemperatureV", sensor), ("nvmlDeviceGetTemperature", sensor))

    def sm_clock_mhz(self) -> float:
        return self._call("nvmlDeviceGetClockInfo", getattr(self.nv, "NVML_CLOCK_SM", 1))

    def mem_clock_mhz(self) -> float:
        return self._call("nvmlDeviceGetClockInfo", getattr(self.nv, "NVML_CLOCK_MEM", 2))

    def clock_event_mask(self) -> int | None:
        """Clock event reasons (new name) or, on older drivers, clocks throttle reasons (same bits)."""
        return self._first(("nvmlDeviceGetCurrentClocksEventReasons",), ("nvmlDeviceGetCurrentClocksThrottleReasons",))

    def reason_names(self, mask: int | None) -> list[str]:
        return reason_names(mask)

    def memory_used_bytes(self) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo").used)

    def memory_total_bytes(self) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo").total)

    def memory_info(self) -> tuple[int, int]:
        """(used, total) bytes from one call."""
        mem = self._call("nvmlDeviceGetMemoryInfo")
        return int(mem.used), int(mem.total)

    def utilization_pct(self) -> tuple[float | None, float | None]:
        util = self._call("nvmlDeviceGetUtilizationRates")
        return util.gpu, util.memory

    def _procs(self, fn_name: str) -> list[GpuProcess]:
        out = []
        for p in self._call(fn_name):
            used = getattr(p, "usedGpuMemory", None)
            out.append(GpuProcess(int(p.pid), used if isinstance(used, int) else None))
        return out

    def compute_processes(self) -> list[GpuProcess]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses")

    def graphics_processes(self) -> list[GpuProcess]:
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses")

    def processes(self) -> list[GpuProcess]:
        """Compute then graphics processes; a kind NVML cannot list is skipped."""
        out: list[GpuProcess] = []
        for fn in (self.compute_processes, self.graphics_processes):
            with contextlib.suppress(DeviceCallError):
                out += fn()
        return out

    # -- settings -----------------------------------------------------------------------------------
    def power_limit_w(self) -> float:
        return self._call("nvmlDeviceGetPowerManagementLimit") * 1e-3

    def enforced_power_limit_w(self) -> float:
        return self._call("nvmlDeviceGetEnforcedPowerLimit") * 1e-3

    def default_power_limit_w(self) -> float:
        return self._call("nvmlDeviceGetPowerManagementDefaultLimit") * 1e-3

    def power_limit_constraints_w(self) -> tuple[float, float]:
        lo, hi = self._call("nvmlDeviceGetPowerManagementLimitConstraints")
        return lo * 1e-3, hi * 1e-3

    def set_power_limit_w(self, watts: float) -> None:
        self._call("nvmlDeviceSetPowerManagementLimit", int(round(watts * 1000)))

    def supported_mem_clocks_mhz(self) -> list[int]:
        return sorted((int(c) for c in self._call("nvmlDeviceGetSupportedMemoryClocks")), reverse=True)

    def supported_sm_clocks_mhz(self, mem_clock_mhz: int | None = None) -> list[int]:
        mem = mem_clock_mhz if mem_clock_mhz is not None else max(self.supported_mem_clocks_mhz())
        return sorted((int(c) for c in self._call("nvmlDeviceGetSupportedGraphicsClocks", int(mem))), reverse=True)

    def set_locked_sm_clocks_mhz(self, lo: int, hi: int) -> None:
        self._call("nvmlDeviceSetGpuLockedClocks", int(lo), int(hi))

    def reset_locked_sm_clocks(self) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks")

    def set_locked_mem_clocks_mhz(self, lo: int, hi: int) -> None:
        self._call("nvmlDeviceSetMemoryLockedClocks", int(lo), int(hi))

    def reset_locked_mem_clocks(self) -> None:
        self._call("nvmlDeviceResetMemoryLockedClocks")

    def persistence_mode(self) -> bool:
        return self._call("nvmlDeviceGetPersistenceMode") == getattr(self.nv, "NVML_FEATURE_ENABLED", 1)

    def set_persistence_mode(self, on: bool) -> None:
        mode = getattr(self.nv, "NVML_FEATURE_ENABLED", 1) if on else getattr(self.nv, "NVML_FEATURE_DISABLED", 0)
        self._call("nvmlDeviceSetPersistenceMode", mode)


class NvidiaHost(GpuHost):
    """An open NVML session: its GPUs, CUDA ↔ NVML mapping, processes."""

    vendor = VENDOR

    def __init__(self, nv: Any) -> None:
        super().__init__()
        self.nv = nv

    def _read_records(self) -> list[Gpu]:
        """Every GPU NVML counts (identity records, `.device` the NvidiaGPU), in NVML (PCI) order."""
        return open_gpus(self.nv)

    def count(self) -> int:
        return int(self.nv.nvmlDeviceGetCount())

    def resolve(self, cvd: str | None, order: str | None) -> Resolution:
        return resolve(self.nv, self.records(), cvd, order)

    def resolve_job(self, env: Any) -> Resolution:
        """The job's devices as its CUDA will number them (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER)."""
        return self.resolve(env.get("CUDA_VISIBLE_DEVICES"), env.get("CUDA_DEVICE_ORDER") or "FASTEST_FIRST")

    def mixed_order_models(self) -> str | None:
        """'0: name, ...' when CUDA's fastest-first order differs from NVML's on this host, else None."""
        return mixed_order_models(self.records())

    def driver_versions(self) -> tuple[str | None, str | None]:
        driver = _call(self.nv, "nvmlSystemGetDriverVersion")
        cuda = _call(self.nv, "nvmlSystemGetCudaDriverVersion")
        cuda_text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None
        return (text(driver) if driver is not None else None), cuda_text

    def processes(self, visible: Sequence[Visible]) -> dict[str, set[int] | str]:
        return processes(self.nv, visible)

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.nv.nvmlShutdown()


def open_host() -> NvidiaHost:
    """nvmlInit; the caller calls `.shutdown()`. Raises DeviceUnavailable without NVML."""
    nv = import_nvml()
    start_library(nv.nvmlInit, "NVML", "no NVIDIA driver or GPU on this host")
    return NvidiaHost(nv)


def session() -> contextlib.AbstractContextManager[NvidiaHost]:
    """nvmlInit … nvmlShutdown around an NvidiaHost; DeviceUnavailable when NVML cannot start."""
    return host_session(open_host)


@contextlib.contextmanager
def nvml_session(nv: Any | None = None) -> Iterator[Any]:
    """nvmlInit … nvmlShutdown; raises DeviceError when NVML cannot start (no driver, no GPU)."""
    nv = nv or import_nvml()
    try:
        nv.nvmlInit()
    except Exception as e:
        raise DeviceUnavailable(f"NVML could not start ({describe_error(e)}): no NVIDIA driver or GPU on this host") from e
    try:
        yield nv
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()


def _call(nv: Any, fn_name: str, *args: Any) -> Any:
    """An optional NVML query: None when the bindings, driver or GPU lack it or it fails."""
    fn = getattr(nv, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except nvml_errors(nv):
        return None


def open_gpus(nv: Any) -> list[Gpu]:
    """Every GPU NVML counts, in NVML (PCI bus) order; one that fails to open keeps its error."""
    gpus = []
    for i in range(int(nv.nvmlDeviceGetCount())):
        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            gpu = Gpu(i, h, text(nv.nvmlDeviceGetUUID(h)), text(nv.nvmlDeviceGetName(h)))
        except nvml_errors(nv) as e:
            gpus.append(Gpu(i, error=describe_error(e)))
            continue
        pci = _call(nv, "nvmlDeviceGetPciInfo", h)
        gpu.pci_bus_id = text(pci.busId) if pci is not None else None
        cc = _call(nv, "nvmlDeviceGetCudaComputeCapability", h)
        gpu.compute_capability = tuple(int(x) for x in cc) if cc is not None else None  # type: ignore[assignment]
        gpu.architecture = _call(nv, "nvmlDeviceGetArchitecture", h)
        mode = _call(nv, "nvmlDeviceGetMigMode", h)
        gpu.mig_enabled = bool(mode and mode[0] == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1))
        gpu.device = NvidiaGPU(nv, h, i, gpu.uuid, gpu.name, gpu.pci_bus_id, gpu.compute_capability)
        gpus.append(gpu)
    return gpus


def mig_instances(nv: Any, gpu: Gpu) -> list[tuple[str, Any, int | None, int | None]]:
    """(MIG UUID, handle, GPU instance id, compute instance id) of each MIG instance on `gpu`."""
    if not gpu.mig_enabled or gpu.handle is None:
        return []
    out = []
    for i in range(int(_call(nv, "nvmlDeviceGetMaxMigDeviceCount", gpu.handle) or 0)):
        h = _call(nv, "nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, i)
        if h is None:
            continue
        uuid = _call(nv, "nvmlDeviceGetUUID", h)
        if uuid is None:
            continue
        out.append((text(uuid), h, _call(nv, "nvmlDeviceGetGpuInstanceId", h),
                    _call(nv, "nvmlDeviceGetComputeInstanceId", h)))
    return out


def _match_prefix(token: str, names: Sequence[str], strip: str) -> list[int]:
    t = token.lower()
    return [i for i, n in enumerate(names) if n.lower().startswith(t) or n.lower()[len(strip):].startswith(t)]


def _resolve_mig(nv: Any, gpus: Sequence[Gpu], token: str) -> tuple[Gpu, str, Any] | str:
    """A MIG entry → (parent GPU, MIG UUID, MIG handle), or why it names nothing."""
    by_uuid = {g.uuid: g for g in gpus if g.uuid}
    if token.upper().startswith("MIG-GPU-") and "/" in token:  # legacy MIG-GPU-<uuid>/<gi>/<ci>
        parent_id, _, rest = token[4:].partition("/")
        parents = [g for g in gpus if g.uuid and g.uuid.lower() == parent_id.lower()]
        if not parents:
            return f"legacy MIG identifier {token!r} names GPU {parent_id}, which NVML does not list"
        try:
            gi, ci = (int(x) for x in rest.split("/"))
        except ValueError:
            return f"legacy MIG identifier {token!r} is malformed: expected MIG-GPU-<uuid>/<gpu instance>/<compute instance>"
        for uuid, h, g_id, c_id in mig_instances(nv, parents[0]):
            if (g_id, c_id) == (gi, ci):
                return parents[0], uuid, h
        return (f"legacy MIG identifier {token!r}: GPU {parent_id} has no MIG instance with GPU instance {gi} and "
                f"compute instance {ci}; use the instance's MIG-… UUID from `nvidia-smi -L`")
    handle = _call(nv, "nvmlDeviceGetHandleByUUID", token)
    if handle is not None:
        uuid = token
    else:  # a shortened MIG UUID: a unique prefix of one instance's UUID
        found = [(g, u, h) for g in gpus for u, h, _, _ in mig_instances(nv, g)]
        hits = _match_prefix(token, [u for _, u, _ in found], "MIG-")
        if len(hits) != 1:
            what = "matches no MIG instance" if not hits else "matches several MIG instances"
            return f"CUDA_VISIBLE_DEVICES entry {token!r} {what}; CUDA ignores it and every entry after it"
        _, uuid, handle = found[hits[0]]
    parent_h = _call(nv, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
    parent_uuid = _call(nv, "nvmlDeviceGetUUID", parent_h) if parent_h is not None else None
    parent = by_uuid.get(text(parent_uuid)) if parent_uuid is not None else None
    if parent is None:
        return f"MIG instance {token!r}: NVML does not give its parent GPU"
    return parent, uuid, handle


def resolve(nv: Any, gpus: Sequence[Gpu], cvd: str | None, order: str | None) -> Resolution:
    """The job's CUDA devices, in CUDA order, mapped to NVML devices. Raises DeviceError when an entry
    names a GPU NVML could not open, or an integer could name a different GPU to CUDA than to NVML."""
    order = (order or "FASTEST_FIRST").strip().upper()
    ok = [g for g in gpus if g.error is None]
    pci = list(gpus)
    # Judged on the GPUs NVML could open (one it cannot has no known model to sort by).
    differ = [g.nvml_index for g in fastest_first(ok)] != [g.nvml_index for g in ok]
    cuda = fastest_first(gpus) if differ and order != "PCI_BUS_ID" else pci
    res = Resolution([], [], order, differ)
    models = ", ".join(f"{g.nvml_index}: {g.name}" for g in ok)
    if cvd is None:
        failed = [g for g in gpus if g.error]
        if failed:
            raise DeviceError("GPU(s) " + ", ".join(f"{g.nvml_index} ({g.error})" for g in failed) + " cannot be "
                              "opened through NVML and CUDA_VISIBLE_DEVICES is unset, so the job may use them; set "
                              "CUDA_VISIBLE_DEVICES to the GPUs this job may use")
        if differ and order != "PCI_BUS_ID":
            res.notes.append(f"this host mixes GPU models (NVML/PCI order {models}) and CUDA_DEVICE_ORDER={order}: "
                             "CUDA ordinals (gpu:N) follow CUDA's fastest-first order as llem estimates it; set "
                             "CUDA_DEVICE_ORDER=PCI_BUS_ID to make them NVML's")
        res.visible = [Visible(i, g, str(i)) for i, g in enumerate(cuda)]
        return res
    seen: set[tuple[int, str | None]] = set()
    for raw in cvd.split(","):
        token = raw.strip()
        if not token:
            break
        mig_uuid, mig_handle = None, None
        if token.lstrip("-").isdigit():
            idx = int(token)
            if not 0 <= idx < len(cuda):
                res.notes.append(f"CUDA_VISIBLE_DEVICES entry {token!r} is not a GPU index (0..{len(cuda) - 1}); "
                                 "CUDA ignores it and every entry after it")
                break
            if differ and order != "PCI_BUS_ID":
                raise DeviceError(
                    f"CUDA_VISIBLE_DEVICES={cvd!r} uses indices with CUDA_DEVICE_ORDER={order} on a host mixing GPU "
                    f"models (NVML/PCI order {models}): CUDA's index {idx} may be a different GPU than NVML's, so "
                    "llem could measure the wrong one; set CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs "
                    "(nvidia-smi -L)")
            gpu = cuda[idx]
        elif token.upper().startswith("MIG-"):
            got = _resolve_mig(nv, gpus, token)
            if isinstance(got, str):
                res.notes.append(got)
                break
            gpu, mig_uuid, mig_handle = got
        else:
            hits = _match_prefix(token, [g.uuid or "" for g in ok], "GPU-")
            if len(hits) != 1:
                what = "matches no GPU UUID" if not hits else "matches several GPU UUIDs"
                res.notes.append(f"CUDA_VISIBLE_DEVICES entry {token!r} {what}; CUDA ignores it and every entry after it")
                break
            gpu = ok[hits[0]]
        if gpu.error:
            raise DeviceError(f"CUDA_VISIBLE_DEVICES entry {token!r} is NVML GPU {gpu.nvml_index}, which NVML cannot "
                              f"open ({gpu.error})")
        key = (gpu.nvml_index, mig_uuid)
        if key in seen:
            continue
        seen.add(key)
        mig_device = None
        if mig_handle is not None:
            mig_name = _call(nv, "nvmlDeviceGetName", mig_handle)
            mig_device = NvidiaGPU(nv, mig_handle, gpu.nvml_index, mig_uuid,
                                   text(mig_name) if mig_name is not None else gpu.name, gpu.pci_bus_id,
                                   gpu.compute_capability)
        res.visible.append(Visible(len(res.visible), gpu, token, mig_uuid, mig_handle, mig_device))
    return res


def compute_pids(nv: Any, handle: Any) -> set[int]:
    """PIDs NVML lists as compute processes on a GPU or MIG handle (raises NVML's errors)."""
    return {int(p.pid) for p in nv.nvmlDeviceGetComputeRunningProcesses(handle)}


def processes(nv: Any, visible: Sequence[Visible]) -> dict[str, set[int] | str]:
    """Compute PIDs per CUDA device (a MIG instance's own, else the GPU's), or why NVML could not say."""
    out: dict[str, set[int] | str] = {}
    if getattr(nv, "nvmlDeviceGetComputeRunningProcesses", None) is None:
        return {v.label: "these NVML bindings lack nvmlDeviceGetComputeRunningProcesses" for v in visible}
    for v in visible:
        try:
            out[v.label] = compute_pids(nv, v.mig_handle if v.mig_handle is not None else v.gpu.handle)
        except nvml_errors(nv) as e:
            out[v.label] = describe_error(e)
    return out


def driver_versions() -> tuple[str | None, str | None]:
    """(NVIDIA driver version, CUDA version the driver supports as 'major.minor'); Nones without NVML."""
    try:
        with nvml_session() as nv:
            driver = _call(nv, "nvmlSystemGetDriverVersion")
            cuda = _call(nv, "nvmlSystemGetCudaDriverVersion")
    except Exception:
        return None, None
    cuda_text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None
    return (text(driver) if driver is not None else None), cuda_text
