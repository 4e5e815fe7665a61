"""Which GPU vendor answers on this host: the first vendor session (NVIDIA, then AMD), counts, driver facts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from llem.device.common import DeviceError, DeviceUnavailable
from llem.device.nvidia import driver_versions as _nvidia_driver_versions
from llem.device.nvidia import session as nvidia_session


def amd_session():  # type: ignore[no-untyped-def]
    """`llem.device.amd.session()` (imported when called: amdsmi may raise at import)."""
    from llem.device.amd import session

    return session()


@contextlib.contextmanager
def gpu_session() -> Iterator[Any]:
    """The first vendor session that answers on this host (NVIDIA, then AMD): a host with `.gpus()`,
    `.records()`, `.resolve_job(env)` (the job's devices from its environment) and `.processes(visible)`.
    Raises DeviceUnavailable, naming both reasons, when neither library sees a GPU."""
    reasons = []
    for open_session in (nvidia_session, amd_session):
        try:
            cm = open_session()
            host = cm.__enter__()
        except DeviceError as e:
            reasons.append(str(e))
            continue
        try:
            if host.count():
                yield host
                return
            reasons.append(f"{host.vendor}: no GPUs")
        finally:
            cm.__exit__(None, None, None)
    raise DeviceUnavailable("; ".join(reasons) or "no GPU library answers")


def _count(open_session) -> int | None:  # type: ignore[no-untyped-def]
    try:
        with open_session() as host:
            return host.count()
    except Exception:
        return None


def device_count() -> int | None:
    """How many GPUs NVML sees, else how many amdsmi sees; None when neither library answers."""
    n = _count(nvidia_session)
    return n if n else (_count(amd_session) or n)


def vendors() -> dict[str, int]:
    """GPU vendors that answer on this host → how many GPUs each lists (cheap; no torch import)."""
    out = {}
    for name, open_session in (("nvidia", nvidia_session), ("amd", amd_session)):
        n = _count(open_session)
        if n:
            out[name] = n
    return out


def gpu_host() -> bool:
    """True when NVML or amdsmi sees at least one GPU."""
    return bool(device_count())


def driver_versions() -> tuple[str | None, str | None]:
    """(NVIDIA driver version, CUDA version the driver supports as 'major.minor'); Nones without NVML."""
    return _nvidia_driver_versions()
