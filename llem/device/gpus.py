"""CUDA devices ↔ NVML devices, in one place: the nvml meter, the launcher's health check, GPU slots
and thermal gaps all ask here.

CUDA numbers the devices a process sees 0..n-1 after `CUDA_VISIBLE_DEVICES` (integers, `GPU-…` UUIDs
or unique prefixes, `MIG-…` instance UUIDs, legacy `MIG-GPU-<uuid>/<gi>/<ci>`; parsing stops at the
first entry that matches nothing). Its integers follow `CUDA_DEVICE_ORDER`: `FASTEST_FIRST` (CUDA's
default) or `PCI_BUS_ID`, which is NVML's order. On hosts mixing GPU models the two differ, so an
integer could name a different GPU to CUDA than to NVML: llem's launcher sets PCI_BUS_ID for every job
unless the user set an order, and `resolve` refuses integers it cannot map for sure.
MIG: NVML has no per-instance energy or power; a MIG instance is measured as its parent GPU, once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llem.errors import UserError


class DeviceError(UserError):
    """The GPUs this job uses cannot be identified or opened; the message says which and why."""


def import_nvml() -> Any:
    """nvidia-ml-py installs the `pynvml` module (the old `pynvml` package is deprecated)."""
    try:
        import pynvml
    except ImportError as e:
        raise DeviceError("NVML bindings missing: pip install nvidia-ml-py") from e
    return pynvml


def nvml_errors(nv: Any) -> tuple[type[BaseException], ...]:
    """What NVML calls raise: NVMLError (and its per-code subclasses), plus NVMLLibraryMismatchError
    (an unversioned function whose `_vN` symbol the driver lacks; not an NVMLError subclass)."""
    out = [getattr(nv, "NVMLError", None), getattr(nv, "NVMLLibraryMismatchError", None)]
    return tuple(c for c in out if isinstance(c, type)) or (Exception,)


def describe_error(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # NVMLError.__str__ may call into the library for unknown codes
        text = repr(getattr(e, "value", e))
    return f"{type(e).__name__}: {text}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def nvml_session(nv: Any | None = None) -> Iterator[Any]:
    """nvmlInit … nvmlShutdown; raises DeviceError when NVML cannot start (no driver, no GPU)."""
    nv = nv or import_nvml()
    try:
        nv.nvmlInit()
    except Exception as e:
        raise DeviceError(f"NVML could not start ({describe_error(e)}): no NVIDIA driver or GPU on this host") from e
    try:
        yield nv
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()


@dataclass
class Gpu:
    """One physical GPU as NVML enumerates it (NVML index = PCI bus order)."""

    nvml_index: int
    handle: Any = None
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    architecture: int | None = None
    mig_enabled: bool = False
    error: str | None = None  # why NVML could not open it (NO_PERMISSION, GPU_IS_LOST, ...)


@dataclass
class Visible:
    """One CUDA device of the job: its ordinal, the physical GPU behind it, the MIG instance if any."""

    cuda_index: int
    gpu: Gpu
    ref: str  # the CUDA_VISIBLE_DEVICES entry (or the CUDA ordinal when unset)
    mig_uuid: str | None = None
    mig_handle: Any = None

    @property
    def label(self) -> str:
        return f"gpu:{self.cuda_index}"


@dataclass
class Resolution:
    visible: list[Visible]
    notes: list[str] = field(default_factory=list)
    order: str = "FASTEST_FIRST"
    orders_differ: bool = False


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
        gpus.append(gpu)
    return gpus


def fastest_first(gpus: Sequence[Gpu]) -> list[Gpu]:
    """CUDA's default order, estimated: higher compute capability first, PCI order within ties."""
    return sorted(gpus, key=lambda g: tuple(-x for x in (g.compute_capability or (0, 0))))


def parse_visible(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES → its entries (indices, UUIDs, prefixes); None when unset."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


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
        res.visible.append(Visible(len(res.visible), gpu, token, mig_uuid, mig_handle))
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


def device_count() -> int | None:
    """How many GPUs NVML sees; None without NVML (no bindings, driver or GPU)."""
    try:
        with nvml_session() as nv:
            return int(nv.nvmlDeviceGetCount())
    except Exception:
        return None


def gpu_host() -> bool:
    """True when NVML sees at least one GPU (cheap; no torch import)."""
    return bool(device_count())


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


def use_pci_order(env: dict[str, str] | None = None) -> str:
    """Make CUDA number GPUs as NVML does (PCI bus order) unless the user chose an order; call before
    CUDA initialises (the launcher does it for its jobs, `run_job` for single runs). Returns the order."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    return env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def job_order(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env  # type: ignore[assignment]
    return env.get("CUDA_DEVICE_ORDER") or "FASTEST_FIRST"
