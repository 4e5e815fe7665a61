"""When each request of a serving job arrives: a seeded gamma (Poisson when burstiness=1) process.

As vLLM's serving benchmark: inter-arrival gaps are gamma-distributed with shape `burstiness` and
mean 1/rate, so rate sets the load and burstiness only its clumping (< 1 burstier, > 1 more regular).
Pure: no clocks, no I/O; the client turns these offsets into send times.
"""

from __future__ import annotations

import math
import random


def arrival_offsets(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Seconds after the start at which requests 0..n-1 arrive; rate=inf: all at 0."""
    if n <= 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate={rate} and burstiness={burstiness} must be > 0")
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)  # gamma scale: mean gap = shape * scale = 1 / rate
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.gammavariate(burstiness, theta)
    return out
