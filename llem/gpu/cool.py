"""Adaptive thermal gaps (`study.gaps=adaptive`): before a job, wait until its GPUs are back within
`study.cool.temp_c` of the idle temperature measured before the study and within `study.cool.power_w` of
the idle power, at most `study.cool.max_s`. Pure decisions here; readings come from a `read` function
(default: llem.device's GPUs), so the benchmark can drive it on the simulator's clock."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Reading = dict[str, tuple[float | None, float | None]]  # GPU UUID → (temperature °C, power W)
COOLING = "cooling to idle"


@dataclass(frozen=True)
class Cool:
    temp_c: float = 3.0
    power_w: float = 10.0
    max_s: float = 300.0
    poll_s: float = 1.0

    @classmethod
    def of(cls, node: Any) -> Cool:
        get = (lambda k: node.get(k)) if hasattr(node, "keys") else (lambda k: getattr(node, k, None))
        d = cls()
        return cls(*(float(get(k)) if get(k) is not None else getattr(d, k)
                     for k in ("temp_c", "power_w", "max_s", "poll_s")))


def read_gpus(refs: Sequence[str] | None) -> Reading:
    """Temperature and power of the GPUs these CUDA_VISIBLE_DEVICES entries name (None: all visible)."""
    from llem.device.common import DeviceCallError
    from llem.gpu.apply import job_gpus

    out: Reading = {}
    with job_gpus(refs) as gpus:
        for g in gpus:
            temp = power = None
            with contextlib.suppress(DeviceCallError):
                temp = float(g.temperature_c())
            with contextlib.suppress(DeviceCallError):
                power = float(g.power_w().watts)
            out[str(g.uuid)] = (temp, power)
    return out


def too_warm(now: Reading, idle: Reading, cool: Cool) -> list[str]:
    """Why the GPUs are not yet cool (empty: cool). A GPU without an idle figure or a reading is not waited for."""
    why = []
    for uuid, (temp, power) in now.items():
        t0, p0 = idle.get(uuid, (None, None))
        if temp is not None and t0 is not None and temp > t0 + cool.temp_c:
            why.append(f"{temp:.0f} °C (idle {t0:.0f})")
        if power is not None and p0 is not None and power > p0 + cool.power_w:
            why.append(f"{power:.0f} W (idle {p0:.0f})")
    return why


def status_text(now: Reading, idle: Reading) -> str:
    parts = []
    for uuid, (temp, power) in now.items():
        t0, p0 = idle.get(uuid, (None, None))
        t = f"{temp:.0f}/{t0:.0f} °C" if temp is not None and t0 is not None else "? °C"
        p = f"{power:.0f}/{p0:.0f} W" if power is not None and p0 is not None else "? W"
        parts.append(f"{t} {p}")
    return f"{COOLING} (now/idle): " + ", ".join(parts)


def record(wait_s: float, now: Reading, idle: Reading, cooled: bool, cool: Cool) -> dict[str, Any]:
    """What goes into the job's result (gpu_settings.cool)."""
    return {"mode": "adaptive", "wait_s": round(wait_s, 3), "cooled": cooled,
            "start_temperature_c": {u: v[0] for u, v in now.items()},
            "start_power_w": {u: v[1] for u, v in now.items()},
            "idle_temperature_c": {u: v[0] for u, v in idle.items()},
            "idle_power_w": {u: v[1] for u, v in idle.items()},
            "temp_c": cool.temp_c, "power_w": cool.power_w, "max_s": cool.max_s}


def wait_cool(read: Callable[[], Reading], idle: Mapping[str, tuple[float | None, float | None]], cool: Cool,
              clock: Callable[[], float], sleep: Callable[[float], None],
              show: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Block until cool or `cool.max_s` (the benchmark's loop; the launcher polls the same test between jobs)."""
    t0 = clock()
    while True:
        now = read()
        waited = clock() - t0
        hot = too_warm(now, dict(idle), cool)
        if not hot or waited >= cool.max_s:
            return record(waited, now, dict(idle), not hot, cool)
        if show is not None:
            show(status_text(now, dict(idle)))
        sleep(min(cool.poll_s, cool.max_s - waited))
