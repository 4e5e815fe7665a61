"""Latency statistics on known timestamps, and the plain statistics helpers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llem.measure.latency import RequestRecord, latency_block
from llem.measure.stats import ci95_halfwidth, cv, percentile, summarize, t_critical_95


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(1)
    for n in (1, 2, 5, 37, 100):
        xs = [rng.random() for _ in range(n)]
        for q in (0, 50, 90, 95, 99, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_summary_and_ci_on_known_numbers() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == 2.5 and s["p50"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert cv([2.0, 2.0, 2.0]) == 0.0
    # 95% CI half-width of [1,2,3,4]: t(3)=3.182, sd=1.29099, n=4 -> 2.0540
    assert ci95_halfwidth([1.0, 2.0, 3.0, 4.0]) == pytest.approx(3.182 * 1.2909944 / 2, rel=1e-4)
    assert t_critical_95(1000) == pytest.approx(1.9623, abs=2e-3)
    assert summarize([])["mean"] is None and math.isnan(ci95_halfwidth([1.0]))


def test_latency_block_from_known_timestamps() -> None:
    # Batch 0: two requests submitted at t=10, tokens at 10.5, 10.6, 10.7 (3 tokens each).
    times = [10.5, 10.6, 10.7]
    recs = [RequestRecord(index=i, input_tokens=8, output_tokens=3, t_submit=10.0, t_first_token=10.5,
                          t_end=10.7, batch=0, token_times=times) for i in range(2)]
    # Request 2 on its own schedule (engine-scheduled): submitted at 20, tokens at 20.2 and 20.6.
    recs.append(RequestRecord(index=2, input_tokens=4, output_tokens=2, t_submit=20.0, t_first_token=20.2,
                              t_end=20.6, token_times=[20.2, 20.6]))
    block = latency_block(recs)
    assert block["ttft_s"]["n"] == 3
    assert block["ttft_s"]["p50"] == pytest.approx(0.5)
    assert block["ttft_s"]["min"] == pytest.approx(0.2)
    assert block["e2e_s"]["max"] == pytest.approx(0.7)
    # ITL per request: (10.7-10.5)/2 = 0.1 twice, (20.6-20.2)/1 = 0.4
    assert sorted(block["itl_request_mean_s"]["p50"] for _ in [0]) == [pytest.approx(0.1)]
    assert block["itl_request_mean_s"]["max"] == pytest.approx(0.4)
    # Per-step gaps: batch 0 counted once (0.1, 0.1) plus the engine-scheduled request's 0.4
    assert block["itl_step_s"]["n"] == 3
    assert block["itl_step_s"]["mean"] == pytest.approx(0.2)


def test_request_without_streaming_has_no_ttft() -> None:
    r = RequestRecord(index=0, input_tokens=4, output_tokens=5, t_submit=1.0, t_first_token=None, t_end=2.0)
    block = latency_block([r])
    assert r.ttft_s is None and r.itl_s is None
    assert block["per_token_timing"] is False and block["e2e_s"]["mean"] == pytest.approx(1.0)
