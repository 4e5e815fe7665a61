"""Energy of spans inside the window — prefill vs decode, vLLM's steady state — on the measured pass.

Each sampling meter's timeseries carries cumulative energy per device (`energy_j`: the NVML counter
or RAPL counter where present, else the power integral). The energy of a span is the difference of
that curve at the span's edges, linearly interpolated between samples. The curve never decreases,
so no span's energy is negative, and spans that tile the window sum to the window's energy exactly —
unlike subtracting a separate prefill-only run, which goes negative at large batch sizes.

Resolution is the sample interval: a prefill shorter than it gets its share by time at the local
mean power (the result says so).
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llem.energy.base import EnergyReading

KINDS = ("gpu", "cpu", "dram")
LABELS = ("prefill", "decode", "unsplit", "other")


@dataclass
class Curve:
    """Cumulative energy (J) of one device against perf_counter time (s)."""

    device: str
    kind: str
    times: list[float]
    energy: list[float]

    def at(self, t: float) -> float:
        ts, es = self.times, self.energy
        if t <= ts[0]:
            return es[0]
        if t >= ts[-1]:
            return es[-1]
        i = bisect.bisect_right(ts, t)
        t0, t1, e0, e1 = ts[i - 1], ts[i], es[i - 1], es[i]
        return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    def between(self, t0: float, t1: float) -> float:
        return max(0.0, self.at(t1) - self.at(t0)) if t1 > t0 else 0.0


def curves(readings: Iterable[EnergyReading]) -> list[Curve]:
    """One curve per measured device of every sampling meter (estimates never have a series)."""
    out = []
    for r in readings:
        if not r.measured or not r.timeseries:
            continue
        by_device: dict[str, list[dict[str, Any]]] = {}
        for row in r.timeseries:
            if row.get("energy_j") is not None:
                by_device.setdefault(row["device"], []).append(row)
        for device, rows in by_device.items():
            rows.sort(key=lambda x: x["t_s"])
            if len(rows) >= 2:
                out.append(Curve(device, rows[0]["kind"], [x["t_s"] for x in rows], [x["energy_j"] for x in rows]))
    return out


def _kind_totals(per_device: dict[str, float], kinds: dict[str, str]) -> dict[str, float | None]:
    totals: dict[str, float | None] = {}
    for kind in KINDS:
        values = [j for dev, j in per_device.items() if kinds[dev] == kind]
        totals[f"{kind}_j"] = sum(values) if values else None
    return totals


def energy_in_span(readings: Sequence[EnergyReading], t0: float, t1: float) -> dict[str, Any] | None:
    """Energy per device and per kind between perf_counter times t0 and t1; None without a series."""
    cs = curves(readings)
    if not cs:
        return None
    per_device = {c.device: c.between(t0, t1) for c in cs}
    covered = all(c.times[0] <= t0 + 1e-9 and t1 <= c.times[-1] + 1e-9 for c in cs)
    return {"t_start_s": t0, "t_end_s": t1, "duration_s": t1 - t0, "devices": per_device,
            **_kind_totals(per_device, {c.device: c.kind for c in cs}), "covered": covered}


def timeline(phases: Sequence[Any], w0: float, w1: float) -> list[tuple[float, float, str]]:
    """Split [w0, w1] into labelled spans: prefill wherever any batch is before its first token, else
    decode wherever any batch is generating, else unsplit (phases without a first token), else other."""
    events: list[tuple[float, str, int]] = []
    for p in phases:
        first = p.t_first_token
        if first is None:
            events += [(p.t_start, "unsplit", 1), (p.t_end, "unsplit", -1)]
        else:
            first = min(max(first, p.t_start), p.t_end)
            events += [(p.t_start, "prefill", 1), (first, "prefill", -1), (first, "decode", 1), (p.t_end, "decode", -1)]
    points = sorted({w0, w1, *(min(max(t, w0), w1) for t, _, _ in events)})
    events.sort(key=lambda e: e[0])
    active = {"prefill": 0, "decode": 0, "unsplit": 0}
    spans: list[tuple[float, float, str]] = []
    k = 0
    for a, b in zip(points, points[1:]):
        while k < len(events) and events[k][0] <= a:
            active[events[k][1]] += events[k][2]
            k += 1
        label = next((name for name in ("prefill", "decode", "unsplit") if active[name] > 0), "other")
        if spans and spans[-1][2] == label and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b, label)
        else:
            spans.append((a, b, label))
    return spans


def _overlapping(phases: Sequence[Any]) -> bool:
    ordered = sorted(phases, key=lambda p: p.t_start)
    return any(b.t_start < a.t_end for a, b in zip(ordered, ordered[1:]))


def phase_energy(readings: Sequence[EnergyReading], phases: Sequence[Any], w0: float, w1: float) -> dict[str, Any] | None:
    """Prefill / decode / other energy inside the window [w0, w1]; None without phases or a series."""
    cs = curves(readings)
    if not cs or not phases:
        return None
    kinds = {c.device: c.kind for c in cs}
    spans = timeline(phases, w0, w1)
    block: dict[str, Any] = {}
    for label in LABELS:
        mine = [(a, b) for a, b, lab in spans if lab == label]
        if not mine and label == "unsplit":
            continue
        per_device = {c.device: sum(c.between(a, b) for a, b in mine) for c in cs}
        block[label] = {"duration_s": sum(b - a for a, b in mine), "devices": per_device,
                        **_kind_totals(per_device, kinds)}
    window = {c.device: c.between(w0, w1) for c in cs}
    gaps = [b - a for c in cs for a, b in zip(c.times, c.times[1:])]
    resolution = statistics.median(gaps) if gaps else None
    prefills = [min(p.t_first_token, p.t_end) - p.t_start for p in phases if p.t_first_token is not None]
    notes = []
    if resolution and prefills and statistics.median(prefills) < resolution:
        notes.append(f"prefill spans (median {statistics.median(prefills) * 1000:.1f} ms) are shorter than the "
                     f"sample interval ({resolution * 1000:.1f} ms): their energy is the local mean power × time")
    overlap = _overlapping(phases)
    if overlap:
        notes.append("phases overlap (continuous batching): instants where any request is in prefill count as "
                     "prefill, the rest of the generating time as decode")
    block.update({
        "window": {"duration_s": w1 - w0, "devices": window, **_kind_totals(window, kinds)},
        "n_phases": len(phases), "overlapping_phases": overlap, "resolution_s": resolution,
        "method": "cumulative energy (counter, else power integral) at phase boundaries, interpolated between "
                  "samples, on the measured pass",
        "notes": notes,
    })
    return block
