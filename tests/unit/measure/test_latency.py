"""Latency statistics on known timestamps (the plain statistics helpers: tests/unit/measure/test_stats.py)."""

from __future__ import annotations

import pytest

from llem.measure.latency import RequestRecord, latency_block


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
