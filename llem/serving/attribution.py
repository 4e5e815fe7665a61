"""Per-request energy of a serving run: each request's share of the energy measured while it ran.

The rule (docs/serving-metrics.md): cut the window at every request's start, first token and end; the
start is the engine's scheduling time where the backend knows it (in-process vLLM: the request is
RUNNING from then; its queued time before takes no share) or the send (HTTP: IN FLIGHT, queueing in the
server included) — the caller (llem/serving/metrics.py) picks it and the result says which. Within
each piece the set of running requests is fixed; the piece's energy (the meter's cumulative-energy
curve at its edges, or mean power × duration with counters only) is split equally among the
requests running in it, and counts for each as prefill (start → first token) or decode (first token →
end). Pieces with no request running are idle. So the shares sum to the energy of the busy pieces,
and busy + idle = the window's energy, exactly (up to float rounding).

Pure: takes spans and an `energy_at(t)` function (cumulative joules at perf_counter time t).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EnergyAt = Callable[[float], float]


@dataclass(frozen=True)
class Span:
    """One request's life on the window clock: start (scheduling, else send), first token (None: none came), end."""

    index: int
    t_start: float
    t_first: float | None
    t_end: float


@dataclass
class Share:
    index: int
    prefill_j: float
    decode_j: float

    @property
    def energy_j(self) -> float:
        return self.prefill_j + self.decode_j


@dataclass
class Attribution:
    shares: list[Share]
    window_j: float  # energy_at(w1) - energy_at(w0)
    busy_j: float  # energy of the pieces with at least one request running (= sum of the shares)
    idle_j: float  # energy of the pieces with none
    busy_s: float
    idle_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"window_j": self.window_j, "busy_j": self.busy_j, "idle_j": self.idle_j, "busy_s": self.busy_s,
                "idle_s": self.idle_s, "attributed_j": sum(s.energy_j for s in self.shares),
                "prefill_j": sum(s.prefill_j for s in self.shares), "decode_j": sum(s.decode_j for s in self.shares)}


def attribute(spans: Sequence[Span], energy_at: EnergyAt, w0: float, w1: float) -> Attribution:
    """Shares of every span in [w0, w1] (parts outside the window get nothing: nothing was measured)."""
    clipped = []
    for s in spans:
        a, b = min(max(s.t_start, w0), w1), min(max(s.t_end, w0), w1)
        b = max(a, b)
        f = b if s.t_first is None else min(max(s.t_first, a), b)  # no first token: all of it was prefill
        clipped.append((s.index, a, f, b))
    points = sorted({w0, w1, *(t for _, a, f, b in clipped for t in (a, f, b))})
    at = {p: k for k, p in enumerate(points)}
    delta = [0] * (len(points) + 1)  # running count per piece k = [points[k], points[k+1]]
    for _, a, _, b in clipped:
        if b > a:
            delta[at[a]] += 1
            delta[at[b]] -= 1
    cum = [energy_at(p) for p in points]
    prefix = [0.0]  # prefix[k] = sum of per-request shares of pieces 0..k-1
    busy_j = idle_j = busy_s = idle_s = 0.0
    running = 0
    for k in range(len(points) - 1):
        running += delta[k]
        e = max(0.0, cum[k + 1] - cum[k])  # the curve never decreases; clamp float noise
        dt = points[k + 1] - points[k]
        if running > 0:
            busy_j += e
            busy_s += dt
            prefix.append(prefix[-1] + e / running)
        else:
            idle_j += e
            idle_s += dt
            prefix.append(prefix[-1])
    shares = [Share(i, prefix[at[f]] - prefix[at[a]], prefix[at[b]] - prefix[at[f]]) for i, a, f, b in clipped]
    return Attribution(shares, max(0.0, cum[-1] - cum[0]), busy_j, idle_j, busy_s, idle_s)


def running_at(spans: Sequence[Span], t: float) -> int:
    """How many spans are running at instant t (start <= t < end)."""
    starts = sorted(s.t_start for s in spans)
    ends = sorted(s.t_end for s in spans)
    return bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)


def energy_function(readings: Sequence[Any], kind: str, w0: float, w1: float,
                    total_j: float | None) -> tuple[EnergyAt | None, str]:
    """Cumulative energy of one device kind against time, and how it was obtained.

    From the sampled series (`EnergyReading.timeseries`: counter, else power integral), summed over the
    kind's devices; with counters only, mean power over the window (total_j / window) × time."""
    from llem.energy.phases import curves

    cs = [c for c in curves(readings) if c.kind == kind]
    if cs:
        return (lambda t: sum(c.at(t) for c in cs)), "timeseries"
    if total_j is None or w1 <= w0:
        return None, "unmeasured"
    power = total_j / (w1 - w0)
    return (lambda t: power * (t - w0)), "mean_power"
