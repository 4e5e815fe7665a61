"""Thermal warmup: keep running warmup work until GPU temperature stops rising (bounded in time).

A cold GPU draws less power and boosts higher than one at working temperature, so the first job of
a study would otherwise look cheaper than the rest. Runs before the window, never inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def thermal_warmup(read_temps: Callable[[], dict[str, float] | None], step: Callable[[], Any], max_s: float,
                   plateau_s: float = 10.0, tolerance_c: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Run `step()` until the hottest device rose < `tolerance_c` over the last `plateau_s`, or `max_s`.

    Returns {ran_s, steps, start_c, end_c, settled, reason}; skipped (no steps) without temperatures.
    """
    first = read_temps()
    if not first:
        return {"ran_s": 0.0, "steps": 0, "settled": None, "reason": "no temperature source (no NVML GPU)"}
    t0 = clock()
    history = [(t0, max(first.values()))]
    steps = 0
    settled = False
    while clock() - t0 < max_s:
        step()
        steps += 1
        temps = read_temps() or {}
        if not temps:
            break
        now = clock()
        history.append((now, max(temps.values())))
        if now - t0 >= plateau_s:
            then = next(temp for t, temp in reversed(history) if now - t >= plateau_s)
            if history[-1][1] - then < tolerance_c:
                settled = True
                break
    ran = clock() - t0
    return {
        "ran_s": ran, "steps": steps, "start_c": history[0][1], "end_c": history[-1][1], "settled": settled,
        "reason": (f"temperature rose < {tolerance_c} °C over {plateau_s} s" if settled
                   else f"stopped at the {max_s} s limit while temperature was still rising"),
    }


def warmup_for(meters: list[Any], step: Callable[[], Any], max_s: float, plateau_s: float,
               tolerance_c: float) -> dict[str, Any] | None:
    """Thermal warmup on the meters' temperatures (the first meter that has any); None when off."""
    if max_s <= 0:
        return None
    for meter in meters:
        if meter.measures and meter.temperatures() is not None:
            return thermal_warmup(meter.temperatures, step, max_s, plateau_s, tolerance_c)
    return {"ran_s": 0.0, "steps": 0, "settled": None, "reason": "no temperature source (no NVML GPU)"}
