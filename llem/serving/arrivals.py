"""When each request of a serving job arrives: exactly `vllm bench serve`'s arrival process.

As `get_request` in vllm/benchmarks/serve.py (vLLM 0.11 … 0.32), so that for one seed llem sends its
requests at the instants vLLM's benchmark would (tests/unit/serving/test_arrivals.py compares with vLLM's
own function):
- per request i a rate r_i: `request_rate`, or with a ramp-up from `start_rps` to `end_rps` over the
  request index (progress = i / max(n − 1, 1)): linear start + (end − start)·progress, exponential
  start·(end/start)^progress;
- a gap per request: r_i = inf → 0; burstiness = inf → 1/r_i (constant gaps); else
  `np.random.gamma(shape=burstiness, scale=1/(r_i·burstiness))` (mean 1/r_i; burstiness 1 = Poisson);
- offsets = cumulative sums of the gaps, so the first request is due after its own gap;
- without a ramp-up, the offsets are rescaled so the last one is n / request_rate exactly (vLLM: "close
  the gap for stabilizing the throughput data from different random seeds").
Seeding: vLLM calls `np.random.seed(seed)` once and then draws the gaps from numpy's global legacy
generator; llem draws from `np.random.RandomState(seed)`, the same stream, without touching global state.
Pure: no clocks, no I/O; the scheduler (schedule.py) turns these offsets into send times.
"""

from __future__ import annotations

import math

RAMP_UP = ("linear", "exponential")


def rate_at(i: int, n: int, rate: float, ramp_up: str | None = None, start_rps: float | None = None,
            end_rps: float | None = None) -> float:
    """Request i's rate (vLLM's `_get_current_request_rate`)."""
    if ramp_up and start_rps is not None and end_rps is not None:
        progress = i / max(n - 1, 1)
        if ramp_up == "linear":
            return start_rps + (end_rps - start_rps) * progress
        if ramp_up == "exponential":
            return start_rps * (end_rps / start_rps) ** progress
        raise ValueError(f"ramp_up={ramp_up!r}: allowed {', '.join(RAMP_UP)}")
    return rate


def arrival_offsets(n: int, rate: float, burstiness: float = 1.0, seed: int = 0, ramp_up: str | None = None,
                    start_rps: float | None = None, end_rps: float | None = None) -> list[float]:
    """Seconds after the start at which requests 0..n-1 are due (vLLM's get_request delays)."""
    if n <= 0:
        return []
    if not burstiness > 0:
        raise ValueError(f"burstiness={burstiness} must be > 0")
    import numpy as np

    rng = np.random.RandomState(seed)
    gaps: list[float] = []
    for i in range(n):
        r = rate_at(i, n, rate, ramp_up, start_rps, end_rps)
        if not r > 0:
            raise ValueError(f"request rate {r} of request {i} must be > 0")
        if math.isinf(r):
            gaps.append(0.0)
        elif math.isinf(burstiness):
            gaps.append(1.0 / r)
        else:
            gaps.append(float(rng.gamma(shape=burstiness, scale=1.0 / (r * burstiness))))
    offsets, t = [], 0.0
    for g in gaps:
        t += g
        offsets.append(t)
    if not ramp_up and offsets[-1] != 0:
        factor = (n / rate) / offsets[-1]
        offsets = [x * factor for x in offsets]
    return offsets


def offered_rate_s(n: int, rate: float, ramp_up: str | None = None, start_rps: float | None = None,
                   end_rps: float | None = None, offsets: list[float] | None = None) -> float | None:
    """The rate the schedule offers: request_rate (= n / last offset without ramp-up); with a ramp-up, n / the
    last offset; None for inf (all at once)."""
    if not ramp_up:
        return None if math.isinf(rate) else rate
    if offsets and offsets[-1] > 0:
        return n / offsets[-1]
    return None
