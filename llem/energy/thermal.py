"""Thermal warmup: keep running warmup work until GPU temperature stops rising (bounded in time).

A cold GPU draws less power and boosts higher than one at working temperature, so the first job of
a study would otherwise look cheaper than the rest. Runs before the window, never inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NO_SOURCE = "no temperature source (no NVML GPU)"


@dataclass
class ThermalWarmup:
    """The result's `energy.thermal_warmup` block: how long it ran, the hottest device's temperatures, why
    it stopped. `settled` None: skipped (no temperature source; then no temperatures are written)."""

    ran_s: float
    steps: int
    settled: bool | None
    reason: str
    start_c: float | None = None
    end_c: float | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.settled is None:
            return {"ran_s": self.ran_s, "steps": self.steps, "settled": None, "reason": self.reason}
        return {"ran_s": self.ran_s, "steps": self.steps, "start_c": self.start_c, "end_c": self.end_c,
                "settled": self.settled, "reason": self.reason}


def thermal_warmup(read_temps: Callable[[], dict[str, float] | None], step: Callable[[], Any], max_s: float,
                   plateau_s: float = 10.0, tolerance_c: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> ThermalWarmup:
    """Run `step()` until the hottest device rose < `tolerance_c` over the last `plateau_s`, or `max_s`.

    Skipped (no steps, `settled` None) without temperatures.
    """
    first = read_temps()
    if not first:
        return ThermalWarmup(0.0, 0, None, NO_SOURCE)
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
    reason = (f"temperature rose < {tolerance_c} °C over {plateau_s} s" if settled
              else f"stopped at the {max_s} s limit while temperature was still rising")
    return ThermalWarmup(ran, steps, settled, reason, start_c=history[0][1], end_c=history[-1][1])


def warmup_for(meters: list[Any], step: Callable[[], Any], max_s: float, plateau_s: float,
               tolerance_c: float) -> ThermalWarmup | None:
    """Thermal warmup on the meters' temperatures (the first meter that has any); None when off."""
    if max_s <= 0:
        return None
    for meter in meters:
        if meter.measures and meter.temperatures() is not None:
            return thermal_warmup(meter.temperatures, step, max_s, plateau_s, tolerance_c)
    return ThermalWarmup(0.0, 0, None, NO_SOURCE)
