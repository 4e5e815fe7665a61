"""Arrivals: llem's schedule equals `vllm bench serve`'s (vLLM's own get_request, run on a fake clock), and
known-value properties (rescale to n/rate, constant gaps at burstiness=inf, ramp-up rates, first gap)."""

from __future__ import annotations

import asyncio
import math
import statistics
from types import SimpleNamespace

import pytest

from llem.serving.arrivals import arrival_offsets, offered_rate_s, rate_at


def test_last_request_is_due_at_n_over_rate_and_the_first_after_its_gap() -> None:
    for seed in range(5):
        a = arrival_offsets(100, 20.0, 1.0, seed)
        assert a[-1] == pytest.approx(100 / 20.0, rel=1e-12)  # realised offered rate is exactly 20 req/s
        assert a[0] > 0 and all(y >= x for x, y in zip(a, a[1:]))
    assert arrival_offsets(1, 4.0, 1.0, 0) == [pytest.approx(0.25)]


def test_infinite_burstiness_gives_constant_gaps_and_infinite_rate_all_at_once() -> None:
    a = arrival_offsets(10, 5.0, math.inf, 0)
    assert a == pytest.approx([0.2 * (k + 1) for k in range(10)])
    assert arrival_offsets(5, math.inf) == [0.0] * 5
    with pytest.raises(ValueError):
        arrival_offsets(5, 0.0)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_gaps_have_cv_one_over_sqrt_shape(burstiness: float) -> None:
    a = arrival_offsets(4000, 10.0, burstiness, seed=3)
    gaps = [a[0]] + [y - x for x, y in zip(a, a[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(0.1, rel=1e-9)  # rescaled: mean gap is exactly 1/rate
    assert statistics.stdev(gaps) / mean == pytest.approx(1 / math.sqrt(burstiness), rel=0.08)


def test_seeded() -> None:
    a = arrival_offsets(50, 8.0, 1.0, seed=7)
    assert a == arrival_offsets(50, 8.0, 1.0, seed=7) and a != arrival_offsets(50, 8.0, 1.0, seed=8)


def test_ramp_up_rates_and_no_rescale() -> None:
    assert [rate_at(i, 5, 99.0, "linear", 2, 10) for i in range(5)] == [2, 4, 6, 8, 10]
    assert [rate_at(i, 3, 99.0, "exponential", 1, 16) for i in range(3)] == pytest.approx([1, 4, 16])
    assert rate_at(3, 5, 7.0) == 7.0
    a = arrival_offsets(4, 99.0, math.inf, 0, "linear", 1, 4)  # constant gaps 1/1, 1/2, 1/3, 1/4: not rescaled
    assert a == pytest.approx([1.0, 1.5, 1.5 + 1 / 3, 1.5 + 1 / 3 + 0.25])
    assert offered_rate_s(4, 99.0, "linear", 1, 4, a) == pytest.approx(4 / a[-1])
    assert offered_rate_s(4, 3.0) == 3.0 and offered_rate_s(4, math.inf) is None


def _vllm_delays(n: int, rate: float, burstiness: float, seed: int, ramp: tuple | None = None) -> list[float]:
    """vLLM's get_request run on a fake clock: the instant each request is yielded, minus the start."""
    import numpy as np
    from vllm.benchmarks import serve

    clock = [1000.0]

    async def fake_sleep(s: float) -> None:
        clock[0] += s

    out: list[float] = []

    async def main() -> None:
        kw = {} if ramp is None else dict(ramp_up_strategy=ramp[0], ramp_up_start_rps=ramp[1], ramp_up_end_rps=ramp[2])
        async for _ in serve.get_request([SimpleNamespace(timestamp=None)] * n, rate, burstiness, **kw):
            out.append(clock[0] - 1000.0)

    np.random.seed(seed)
    saved = serve.asyncio, serve.time
    serve.asyncio, serve.time = SimpleNamespace(sleep=fake_sleep), SimpleNamespace(time=lambda: clock[0])
    try:
        asyncio.run(main())
    finally:
        serve.asyncio, serve.time = saved
    return out


@pytest.mark.slow
@pytest.mark.vllm
def test_schedule_equals_vllm_get_request() -> None:
    pytest.importorskip("vllm.benchmarks.serve")
    cases = [(100, 20.0, 1.0, 0, None), (100, 10.0, 1.0, 1, None), (60, 7.5, 0.3, 42, None),
             (60, 7.5, 3.0, 5, None), (20, 4.0, math.inf, 0, None), (10, math.inf, 1.0, 0, None),
             (50, 99.0, 1.0, 3, ("linear", 2, 20)), (50, 99.0, 0.5, 4, ("exponential", 1, 30))]
    for n, rate, b, seed, ramp in cases:
        mine = arrival_offsets(n, rate, b, seed, *(ramp or ()))
        theirs = _vllm_delays(n, rate, b, seed, ramp)
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-9), (n, rate, b, seed, ramp)
