"""From one GPU's samples to its energy (pure, no device calls): the counter's readings placed on its
tick times (`tick_curve`), the window's energy from that curve (else the sampled power's integral),
the timeseries rows, the device's facts and its thermal summary (`summarise`). `llem.energy.gpu_meter`
collects the samples; this module only computes."""

from __future__ import annotations

import math
import statistics
from typing import Any

from llem.energy.base import Thermal
from llem.energy.sampler import cumulative_trapezoid, trapezoid

COUNTER_UPDATE_PERIOD_S = 0.1  # used when the step cannot be measured (no counter, or it did not move)
CONTINUOUS_BELOW_S = 0.005  # a measured step shorter than this is the polling, not the counter

# The clock event reasons that mean the GPU ran slower than it could for thermal or power reasons.
THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def tick_curve(rows: list[dict[str, Any]], start: tuple[float, int] | None, end: tuple[float, int] | None,
               step_s: float | None) -> tuple[list[float], list[float]] | None:
    """Cumulative counter energy (J) at the counter's tick times: each sampled value is placed at the
    last tick before its sample (ticks every `step_s` from the start anchor, the period refitted to the
    end anchor), anchors included. None without two counter values."""
    pts = [(r.get("counter_t_s", r["t_s"]), r["counter_mj"]) for r in rows if r["counter_mj"] is not None]
    if start is None and end is None or not step_s:
        points = pts
    else:
        period = step_s
        if start is not None and end is not None and end[0] > start[0]:
            n = max(1, round((end[0] - start[0]) / step_s))
            period = (end[0] - start[0]) / n
        origin = start[0] if start is not None else end[0]  # type: ignore[index]
        points = [(origin + math.floor((t - origin) / period + 1e-9) * period, v) for t, v in pts]
        points = [p for p in points if (start is None or p[0] >= start[0]) and (end is None or p[0] <= end[0])]
        points += [a for a in (start, end) if a is not None]
    points.sort()
    times: list[float] = []
    values: list[int] = []
    for t, v in points:
        if times and t - times[-1] < 1e-9:
            values[-1] = max(values[-1], v)
        elif values and v < values[-1]:
            continue  # a value placed a tick too late (period drift): the next point carries it
        else:
            times.append(t)
            values.append(v)
    if len(times) < 2:
        return None
    base = values[0]
    return times, [(v - base) / 1000.0 for v in values]


def _interp(times: list[float], values: list[float], t: float) -> float:
    if t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    lo, hi = 0, len(times) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if times[mid] <= t:
            lo = mid
        else:
            hi = mid
    t0, t1 = times[lo], times[hi]
    return values[lo] + (values[hi] - values[lo]) * (t - t0) / (t1 - t0)


def summarise(g: Any, rows: list[dict[str, Any]], t0: float, anchors: tuple[Any, Any], meter: str = "nvml"
               ) -> tuple[float | None, list[dict[str, Any]], dict[str, Any], dict[str, list[float]] | None, Thermal]:
    """Energy (tick-aligned counter, else integral), timeseries rows, the device's facts, its curve, its thermal.
    `g`: the meter's per-GPU record (llem.energy.gpu_meter._Gpu)."""
    p_rows = [r for r in rows if r["power_w"] is not None]
    integral = trapezoid([r["t_s"] for r in p_rows], [r["power_w"] for r in p_rows]) if len(p_rows) > 1 else None
    c_rows = [r for r in rows if r["counter_mj"] is not None]
    naive = (c_rows[-1]["counter_mj"] - c_rows[0]["counter_mj"]) / 1000.0 if len(c_rows) > 1 else None
    curve = None
    counter = None
    truncated = False
    covered = None
    if naive is not None and naive >= 0:  # negative: driver reload mid-window, the counter restarted
        step = g.counter_step_s or COUNTER_UPDATE_PERIOD_S
        # A counter that moves on (nearly) every poll is continuous: its readings are at their sample times.
        tc = tick_curve(c_rows, anchors[0], anchors[1], step if step >= CONTINUOUS_BELOW_S else None)
        if tc is not None:
            times, cum = tc
            a, b = rows[0]["t_s"], rows[-1]["t_s"]
            counter = _interp(times, cum, b) - _interp(times, cum, a)
            curve = {"t_s": times, "energy_j": cum}
            truncated = c_rows[-1] is not rows[-1]
            covered = min(b, times[-1]) - a
    energy = counter if counter is not None else integral
    method = f"{meter}_counter" if counter is not None else f"{meter}_power_integral"
    if counter is None and p_rows and len(p_rows) > 1:
        ts = [r["t_s"] for r in p_rows]
        curve = {"t_s": ts, "energy_j": cumulative_trapezoid(ts, [r["power_w"] for r in p_rows])}
    series = []
    for r in rows:
        names = g.dev.reason_names(r["clock_event_reasons"])
        e = None
        if curve is not None and (counter is None and r["power_w"] is not None or counter is not None):
            e = _interp(curve["t_s"], curve["energy_j"], r["t_s"]) - _interp(curve["t_s"], curve["energy_j"], rows[0]["t_s"])
        series.append({
            "t_s": r["t_s"], "elapsed_s": r["t_s"] - t0, "meter": meter, "device": g.device, "kind": "gpu",
            "power_w": r["power_w"], "energy_j": e, "temperature_c": r["temperature_c"],
            "sm_clock_mhz": r["sm_clock_mhz"], "mem_clock_mhz": r["mem_clock_mhz"],
            "gpu_util_pct": r["gpu_util_pct"], "mem_util_pct": r["mem_util_pct"],
            "memory_used_bytes": r["memory_used_bytes"], "clock_event_reasons": r["clock_event_reasons"],
            "throttle": ",".join(n for n in names if n in THROTTLE_REASONS) or None,
        })
    throttle_s: dict[str, float] = {}
    for a_row, b_row in zip(rows, rows[1:]):
        for name in g.dev.reason_names(a_row["clock_event_reasons"]):
            if name in THROTTLE_REASONS:
                throttle_s[name] = throttle_s.get(name, 0.0) + (b_row["t_s"] - a_row["t_s"])
    temps = [float(r["temperature_c"]) for r in rows if r["temperature_c"] is not None]
    duration = rows[-1]["t_s"] - rows[0]["t_s"] if rows else 0.0
    gaps = [b_row["t_s"] - a_row["t_s"] for a_row, b_row in zip(rows, rows[1:])]
    extra: dict[str, Any] = {
        "method": method, "truncated": truncated,
        "uuid": g.uuid, "name": g.name, f"{meter}_index": g.nvml_index,
        "cuda_index": g.visible[0].cuda_index,
        "cuda_indices": [v.cuda_index for v in g.visible], "mig": g.migs[0] if g.migs else None,
        "mig_instances": g.migs, "power_source": g.power_source, "counter_step_s": g.counter_step_s,
        "counter_j": counter, "counter_uncorrected_j": naive, "integral_j": integral,
        "counter_covered_s": covered,
        "integral_vs_counter_pct": (integral - counter) / counter * 100 if counter and integral is not None else None,
        "samples": len(rows), "sample_interval_s": statistics.median(gaps) if gaps else None,
        "duration_s": duration,
        "mean_power_w": energy / duration if energy is not None and duration > 0 else None,
        "max_power_w": max((r["power_w"] for r in p_rows), default=None),
        "read_errors": g.read_errors,
        "gpu_util_pct_mean": _mean([r["gpu_util_pct"] for r in rows]),
        "memory_used_bytes_max": max((r["memory_used_bytes"] for r in rows if r["memory_used_bytes"] is not None),
                                     default=None),
    }
    thermal = Thermal(
        temperature_start_c=temps[0] if temps else None,
        temperature_end_c=temps[-1] if temps else None,
        temperature_max_c=max(temps) if temps else None,
        temperature_drift_c=(max(temps) - temps[0]) if temps else None,
        sm_clock_mhz=_stats([r["sm_clock_mhz"] for r in rows if r["sm_clock_mhz"] is not None]),
        mem_clock_mhz=_stats([r["mem_clock_mhz"] for r in rows if r["mem_clock_mhz"] is not None]),
        throttle_s=throttle_s,
        power_limit_w=g.power_limit_w,
        persistence_mode=g.persistence_mode,
    )
    return energy, series, extra, curve, thermal


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None
