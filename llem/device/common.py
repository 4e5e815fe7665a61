"""The abstract GPU (Zeus's `device/gpu/common.py` shape): one object per physical GPU, one class per
vendor (`llem.device.nvidia.NvidiaGPU`, `llem.device.amd.AmdGPU`). Every vendor call of llem lives in
those two modules; meters, health checks, GPU slots, gaps and GPU settings use only this API.

Reads (each may raise a `DeviceCallError` subclass, see below):
    identity:        .vendor, .index (the vendor library's enumeration index), .uuid, .name, .pci_bus_id
    energy:          has_energy_counter() -> bool
                     energy_counter() -> EnergyCounter(energy_j, t_s | None, resolution_j | None)
                         cumulative J since an arbitrary origin, wraparound already unfolded; t_s is the
                         driver's timestamp of the reading in seconds where the vendor gives one, else None
                     energy_counter_raw() -> the vendor's native integer (NVML mJ; amdsmi accumulator ticks)
    power:           power_w() -> PowerReading(watts, kind) with kind "instant" | "average"
                     power_kind() -> "instant" | "average" | "unknown" (what power_w will return)
                     power_source() -> the vendor reading behind power_w (e.g. "power_instant_field",
                         "power_usage_1s_average", "current_socket_power", "average_socket_power")
    thermal/clocks:  temperature_c(), sm_clock_mhz(), mem_clock_mhz(), clock_event_reasons() -> list[str],
                     reason_names(mask) -> list[str]
                     clock_event_mask() -> int | None (NVIDIA's bit mask; None where a vendor has none)
    memory/util:     memory_used_bytes(), memory_total_bytes(), utilization_pct() -> (gpu %, memory %)
    processes:       processes() -> list[GpuProcess(pid, used_bytes | None)] (compute, then graphics)
Settings (the GPU-settings sweep; each raises DevicePermissionError without root, DeviceNotSupported
where the GPU cannot):
    power_limit_w(), enforced_power_limit_w(), default_power_limit_w(), power_limit_constraints_w() -> (min, max)
    set_power_limit_w(w)
    supported_sm_clocks_mhz(), supported_mem_clocks_mhz() -> sorted lists (descending, as NVML lists them)
    set_locked_sm_clocks_mhz(lo, hi), reset_locked_sm_clocks()
    set_locked_mem_clocks_mhz(lo, hi), reset_locked_mem_clocks()
    persistence_mode() -> bool, set_persistence_mode(on)

Hosts (module level, per vendor): `llem.device.nvidia.session()` / `llem.device.amd.session()` are
context managers yielding a `GpuHost` (`.gpus()` every GPU the library lists, `.vendor`) and raising
`DeviceUnavailable` (a UserError) when the library, driver or GPUs are absent. `llem.device.vendors()`
says which vendors answer on this machine; `llem.device.gpu_session()` opens the first that does
(NVIDIA, then AMD). A host has `.gpus()`, `.records()` (identity records: uuid, name, pci_bus_id,
`.device` = the GPU), `.count()`, `.resolve_job(env)` (the job's devices from CUDA_VISIBLE_DEVICES, or
ROCR/HIP/CUDA_VISIBLE_DEVICES on AMD: a Resolution whose `.visible[i].gpu.device` is the GPU and
`.visible[i].target` the GPU or MIG instance) and `.processes(visible)`.

Errors: vendor exceptions are mapped in ONE place each (`NvidiaGPU`/`AmdGPU` call `map_error` of this
module with the vendor code) to:
    DeviceCallError (root, LlemError)  ─┬─ DevicePermissionError (also a UserError: exit 2 when a
                                        │    setting needs root)   NVML_ERROR_NO_PERMISSION, AMDSMI_STATUS_NO_PERM
                                        ├─ DeviceNotSupported      NVML NOT_SUPPORTED / FUNCTION_NOT_FOUND /
                                        │    library mismatch, AMDSMI_STATUS_NOT_SUPPORTED (2) / NOT_YET_IMPLEMENTED,
                                        │    a function these bindings lack, an "N/A" value
                                        ├─ DeviceLost              NVML GPU_IS_LOST, amdsmi NOT_FOUND / DRIVER_NOT_LOADED
                                        └─ DeviceReadError         anything else (a transient failure)
Each carries `.vendor`, `.call` (the vendor function), `.code` (the vendor's code) and `.detail` (the
vendor exception's own text, e.g. "NVMLError_NoPermission: Insufficient Permissions").
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from llem.errors import LlemError, UserError

if TYPE_CHECKING:
    from llem.device.gpus import Gpu

INSTANT, AVERAGE, UNKNOWN = "instant", "average", "unknown"


class DeviceError(UserError):
    """The GPUs this job uses cannot be identified or opened; the message says which and why."""


class DeviceUnavailable(DeviceError):
    """A vendor library, its driver or its GPUs are absent on this host."""


class DeviceCallError(LlemError):
    """A vendor call failed; `.vendor`, `.call`, `.code` and `.detail` say which and how."""

    def __init__(self, vendor: str, call: str, code: Any, detail: str) -> None:
        super().__init__(f"{vendor} {call}: {detail}")
        self.vendor, self.call, self.code, self.detail = vendor, call, code, detail


class DevicePermissionError(DeviceCallError, UserError):
    """The call needs privileges this process lacks (root, or a cgroup that hides the GPU)."""


class DeviceNotSupported(DeviceCallError):
    """This GPU, driver or binding cannot answer the call; asking again will not change that."""


class DeviceLost(DeviceCallError):
    """The GPU fell off the bus or its driver went away."""


class DeviceReadError(DeviceCallError):
    """Any other failure of a vendor call (may be transient)."""


_KINDS: dict[str, type[DeviceCallError]] = {"permission": DevicePermissionError, "not_supported": DeviceNotSupported,
                                            "lost": DeviceLost, "read": DeviceReadError}


def map_error(vendor: str, call: str, kind: str, code: Any, detail: str) -> DeviceCallError:
    """The one place a vendor failure becomes an llem exception: `kind` is the vendor module's
    classification of its code (permission | not_supported | lost | read)."""
    return _KINDS.get(kind, DeviceReadError)(vendor, call, code, detail)


class EnergyCounter(NamedTuple):
    energy_j: float  # cumulative since an arbitrary origin, wraparound unfolded
    t_s: float | None  # the driver's timestamp of the reading (s), None where the vendor gives none
    resolution_j: float | None  # the counter's quantum (J)


class PowerReading(NamedTuple):
    watts: float
    kind: str  # INSTANT or AVERAGE


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int | None = None


class GPU(abc.ABC):
    """One physical GPU of one vendor. Subclasses implement every method through their vendor library;
    a method the vendor lacks raises DeviceNotSupported (never returns a made-up value)."""

    vendor: str = "?"

    def __init__(self, index: int, uuid: str | None = None, name: str | None = None,
                 pci_bus_id: str | None = None) -> None:
        self.index, self.uuid, self.name, self.pci_bus_id = index, uuid, name, pci_bus_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index}, {self.uuid!r}, {self.name!r})"

    def _vendor_call(self, lib: Any, fn_name: str, args: tuple[Any, ...], errors: tuple[type[BaseException], ...],
                     classify: Any, lacks: str, cached_code: Any = None) -> Any:
        """`lib.fn_name(self.handle, *args)` with the vendor's failures mapped by `map_error` (`classify(e)`
        gives the vendor's (kind, code)); a function the GPU does not support is never asked again."""
        no: set[str] = self.__dict__.setdefault("_no", set())
        if fn_name in no:
            raise DeviceNotSupported(self.vendor, fn_name, cached_code, f"{fn_name}: not supported on this GPU")
        fn = getattr(lib, fn_name, None)
        if fn is None:
            no.add(fn_name)
            raise DeviceNotSupported(self.vendor, fn_name, None, f"{lacks} {fn_name}")
        try:
            return fn(self.handle, *args)  # type: ignore[attr-defined]
        except errors as e:
            from llem.device.gpus import describe_error

            kind, code = classify(e)
            err = map_error(self.vendor, fn_name, kind, code, describe_error(e))
            if isinstance(err, DeviceNotSupported):
                no.add(fn_name)
            raise err from e

    def _unsupported(self, call: str) -> DeviceNotSupported:
        return DeviceNotSupported(self.vendor, call, None, f"{call} is not available for {self.vendor} GPUs")

    # -- energy and power -----------------------------------------------------------------------------
    @abc.abstractmethod
    def has_energy_counter(self) -> bool: ...

    @abc.abstractmethod
    def energy_counter(self) -> EnergyCounter: ...

    @abc.abstractmethod
    def energy_counter_raw(self) -> int: ...

    @abc.abstractmethod
    def power_w(self) -> PowerReading: ...

    @abc.abstractmethod
    def power_kind(self) -> str: ...

    def power_source(self) -> str:
        """Which vendor reading power_w uses (recorded with each GPU's energy), e.g. power_instant_field."""
        return self.power_kind()

    # -- thermal, clocks, memory, processes -----------------------------------------------------------
    @abc.abstractmethod
    def temperature_c(self) -> float: ...

    @abc.abstractmethod
    def sm_clock_mhz(self) -> float: ...

    @abc.abstractmethod
    def mem_clock_mhz(self) -> float: ...

    def clock_event_mask(self) -> int | None:
        return None

    def reason_names(self, mask: int | None) -> list[str]:
        """The names of the clock event reasons in `mask` (NVIDIA's bits); [] where a vendor has none."""
        return []

    def clock_event_reasons(self) -> list[str]:
        return self.reason_names(self.clock_event_mask())

    @abc.abstractmethod
    def memory_used_bytes(self) -> int: ...

    def memory_total_bytes(self) -> int:
        raise self._unsupported("memory_total_bytes")

    def utilization_pct(self) -> tuple[float | None, float | None]:
        raise self._unsupported("utilization_pct")

    @abc.abstractmethod
    def processes(self) -> list[GpuProcess]: ...

    # -- settings -------------------------------------------------------------------------------------
    def power_limit_w(self) -> float:
        raise self._unsupported("power_limit_w")

    def enforced_power_limit_w(self) -> float:
        return self.power_limit_w()

    def default_power_limit_w(self) -> float:
        raise self._unsupported("default_power_limit_w")

    def power_limit_constraints_w(self) -> tuple[float, float]:
        raise self._unsupported("power_limit_constraints_w")

    def set_power_limit_w(self, watts: float) -> None:
        raise self._unsupported("set_power_limit_w")

    def supported_mem_clocks_mhz(self) -> list[int]:
        raise self._unsupported("supported_mem_clocks_mhz")

    def supported_sm_clocks_mhz(self, mem_clock_mhz: int | None = None) -> list[int]:
        raise self._unsupported("supported_sm_clocks_mhz")

    def set_locked_sm_clocks_mhz(self, lo: int, hi: int) -> None:
        raise self._unsupported("set_locked_sm_clocks_mhz")

    def reset_locked_sm_clocks(self) -> None:
        raise self._unsupported("reset_locked_sm_clocks")

    def set_locked_mem_clocks_mhz(self, lo: int, hi: int) -> None:
        raise self._unsupported("set_locked_mem_clocks_mhz")

    def reset_locked_mem_clocks(self) -> None:
        raise self._unsupported("reset_locked_mem_clocks")

    def persistence_mode(self) -> bool:
        raise self._unsupported("persistence_mode")

    def set_persistence_mode(self, on: bool) -> None:
        raise self._unsupported("set_persistence_mode")


class GpuHost(abc.ABC):
    """One open session of a vendor library: the GPUs it lists (identity records read once, then kept)."""

    vendor: str = "?"

    def __init__(self) -> None:
        self._gpus: list[Gpu] | None = None

    @abc.abstractmethod
    def _read_records(self) -> list[Gpu]:
        """Every GPU the library lists, in the order llem reports (called once per session)."""

    def records(self) -> list[Gpu]:
        """Every GPU the library lists (identity records, `.device` the vendor's GPU)."""
        if self._gpus is None:
            self._gpus = self._read_records()
        return self._gpus

    def gpus(self) -> list[GPU]:
        return [g.device for g in self.records() if g.device is not None]

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Close the vendor library's session (never raises)."""


H = TypeVar("H", bound=GpuHost)


def start_library(init: Callable[[], Any], library: str, missing: str) -> None:
    """`init()` of a vendor library; DeviceUnavailable ("<library> could not start (...): <missing>") when it raises."""
    try:
        init()
    except Exception as e:
        from llem.device.gpus import describe_error

        raise DeviceUnavailable(f"{library} could not start ({describe_error(e)}): {missing}") from e


@contextlib.contextmanager
def host_session(open_host: Callable[[], H]) -> Iterator[H]:
    """`open_host()` … `host.shutdown()` (also when the body raises)."""
    host = open_host()
    try:
        yield host
    finally:
        host.shutdown()


def unfold_wrap(prev_raw: int | None, raw: int, offset: int) -> int:
    """A counter that wrapped (raw < previous raw): the wrap width is 2**32 when the previous value fit
    in 32 bits, else 2**64. Returns the new offset to add to raw values."""
    if prev_raw is not None and raw < prev_raw:
        offset += (1 << 32) if prev_raw < (1 << 32) else (1 << 64)
    return offset
