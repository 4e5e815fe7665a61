"""Energy of spans inside the window — prefill vs decode, vLLM's steady state — on the measured pass.

Each sampling meter gives a cumulative energy curve per device: the NVML counter at its tick times
(`EnergyReading.curves`), else the timeseries' `energy_j` (RAPL counter, or the power
integral). The energy of a span is that curve's difference at the span's edges. The split into
prefill / decode / other works on the curve's cells (one counter step or sample interval each, the
resolution): a cell inside one phase is that phase's; a cell straddling a boundary is divided in
proportion to time × each phase's mean power, fitted by least squares over all cells — not by time
alone, which would move energy from the hot prefill to decode at every boundary. The curve never
decreases and every cell is divided completely, so no phase is negative and the phases sum to the
window's energy exactly — unlike subtracting a separate prefill-only run, which goes negative at large
batch sizes.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llem.energy.base import EnergyReading

KINDS = ("gpu", "cpu", "dram")
LABELS = ("prefill", "decode", "mixed", "unsplit", "other")


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
    """One curve per measured device of every sampling meter (estimates never have a series); devices
    a meter left out of the job's energy (rows with `attributed: false`) have none."""
    out = []
    for r in readings:
        if not r.measured:
            continue
        given = r.curves
        kinds = {d.device: d.kind for d in r.devices}
        for device, c in given.items():
            if device in kinds and len(c.t_s) >= 2:
                out.append(Curve(device, kinds[device], list(c.t_s), list(c.energy_j)))
        if not r.timeseries:
            continue
        by_device: dict[str, list[dict[str, Any]]] = {}
        for row in r.timeseries:
            if row.get("energy_j") is not None and row.get("attributed", True) and row["device"] not in given:
                by_device.setdefault(row["device"], []).append(row)
        for device, rows in by_device.items():
            rows.sort(key=lambda x: x["t_s"])
            if len(rows) >= 2:
                out.append(Curve(device, rows[0]["kind"], [x["t_s"] for x in rows], [x["energy_j"] for x in rows]))
    return out


def _kind_totals(per_device: dict[str, float], kinds: dict[str, str]) -> dict[str, float | None]:
    totals: dict[str, float | None] = {}
    for kind in (*KINDS, *(("node",) if "node" in kinds.values() else ())):  # the BMC's node: beside, not in
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
    """Split [w0, w1] into labelled spans. The rule: an instant is prefill where some phase is before its first
    token and none is generating, decode where some phase is generating and none is before its first token,
    mixed where both happen (continuous batching: the engine's steps carry prefill and decode together, so
    that energy cannot be told apart), unsplit where only phases without a first token run, else other."""
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
        if active["prefill"] > 0 and active["decode"] > 0:
            label = "mixed"
        else:
            label = next((name for name in ("prefill", "decode", "unsplit") if active[name] > 0), "other")
        if spans and spans[-1][2] == label and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b, label)
        else:
            spans.append((a, b, label))
    return spans


RULE = ("prefill: instants where some request is between its start (engine scheduling where known, else send) and "
        "its first token and none is generating; decode: some request generating and none before its first token; "
        "mixed: both at once (one engine step carries both: not told apart, not in prefill or decode)")


def _overlapping(phases: Sequence[Any]) -> bool:
    ordered = sorted(phases, key=lambda p: p.t_start)
    return any(b.t_start < a.t_end for a, b in zip(ordered, ordered[1:]))


def _cells(c: Curve, w0: float, w1: float) -> list[tuple[float, float, float]]:
    """(start, end, energy) of the curve's cells inside [w0, w1]."""
    edges = [w0, *(t for t in c.times if w0 < t < w1), w1]
    return [(a, b, c.between(a, b)) for a, b in zip(edges, edges[1:]) if b > a]


def _overlap(a: float, b: float, spans: Sequence[tuple[float, float, str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s0, s1, label in spans:
        d = min(b, s1) - max(a, s0)
        if d > 0:
            out[label] = out.get(label, 0.0) + d
    return out


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(rhs)
    m = [row[:] + [rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_powers(cells: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Mean power per label from cells (durations per label, energy): least squares, E ≈ Σ d·P.
    Labels the fit cannot separate, or fits below zero, fall back to the mean power of all cells."""
    labels = sorted({k for d, _ in cells for k in d})
    total_t = sum(sum(d.values()) for d, _ in cells)
    mean = sum(e for _, e in cells) / total_t if total_t > 0 else 0.0
    a = [[sum(d.get(i, 0.0) * d.get(j, 0.0) for d, _ in cells) for j in labels] for i in labels]
    b = [sum(d.get(i, 0.0) * e for d, e in cells) for i in labels]
    sol = _solve(a, b) if labels else None
    if sol is None or any(p < 0 for p in sol):
        return {k: mean for k in labels}
    return dict(zip(labels, sol))


def split(cells: Sequence[tuple[dict[str, float], float]], powers: dict[str, float]) -> dict[str, float]:
    """Each cell's energy divided among its labels ∝ duration × fitted power (∝ duration if all zero)."""
    out: dict[str, float] = {}
    for d, e in cells:
        weights = {k: t * max(powers.get(k, 0.0), 0.0) for k, t in d.items()}
        total = sum(weights.values())
        if total <= 0:
            weights, total = dict(d), sum(d.values())
        for k, w in weights.items():
            out[k] = out.get(k, 0.0) + (e * w / total if total > 0 else 0.0)
    return out


def phase_energy(readings: Sequence[EnergyReading], phases: Sequence[Any], w0: float, w1: float) -> dict[str, Any] | None:
    """Prefill / decode / other energy inside the window [w0, w1]; None without phases or a series."""
    cs = curves(readings)
    if not cs or not phases:
        return None
    kinds = {c.device: c.kind for c in cs}
    spans = timeline(phases, w0, w1)
    by_device: dict[str, dict[str, float]] = {}
    fitted: dict[str, dict[str, float]] = {}
    for c in cs:
        cells = [(_overlap(a, b, spans), e) for a, b, e in _cells(c, w0, w1)]
        fitted[c.device] = fit_powers(cells)
        by_device[c.device] = split(cells, fitted[c.device])
    block: dict[str, Any] = {}
    for label in LABELS:
        mine = [(a, b) for a, b, lab in spans if lab == label]
        if not mine and label == "unsplit":
            continue
        per_device = {c.device: by_device[c.device].get(label, 0.0) for c in cs}
        block[label] = {"duration_s": sum(b - a for a, b in mine), "devices": per_device,
                        **_kind_totals(per_device, kinds)}
    window = {c.device: c.between(w0, w1) for c in cs}
    gaps = [b - a for c in cs for a, b in zip(c.times, c.times[1:]) if b > a]
    intervals = [x for r in readings if r.sampling is not None for x in r.sampling.intervals_s()]
    candidates = ([statistics.median(gaps)] if gaps else []) + intervals
    resolution = max(candidates) if candidates else None
    prefills = [min(p.t_first_token, p.t_end) - p.t_start for p in phases if p.t_first_token is not None]
    notes = []
    if resolution and prefills and statistics.median(prefills) < resolution:
        notes.append(f"prefill spans (median {statistics.median(prefills) * 1000:.1f} ms) are shorter than the "
                     f"sample interval or counter step ({resolution * 1000:.1f} ms): their energy comes from "
                     "each phase's mean power fitted over the window, not from cells of their own")
    overlap = _overlapping(phases)
    if overlap:
        notes.append("phases overlap (continuous batching): only instants with prefill alone count as prefill and "
                     "with decode alone as decode; instants with both are 'mixed'")
    block.update({
        "window": {"duration_s": w1 - w0, "devices": window, **_kind_totals(window, kinds)},
        "n_phases": len(phases), "overlapping_phases": overlap, "resolution_s": resolution, "rule": RULE,
        "fitted_power_w": fitted,
        "method": "cumulative energy (counter at its tick times, else power integral) per cell of one counter step "
                  "or sample interval; cells straddling a phase boundary divided by time × each phase's fitted "
                  "mean power; on the measured pass",
        "notes": notes,
    })
    return block
