"""llem.measure.stats on known numbers: numpy's percentile, the sample (n-1) standard deviation, Student's t
table and its large-df expansion, the 95 % CI of a mean."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llem.measure.stats import ci95_halfwidth, cv, mean, percentile, std, summarize, t_critical_95


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


def test_std_is_the_sample_deviation_and_nan_below_two_values() -> None:
    assert std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(math.sqrt(32 / 7))  # n-1, not n
    assert math.isnan(std([3.0])) and math.isnan(mean([])) and math.isnan(percentile([], 50))
    assert cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)


def test_t_table_ends_at_30_and_the_expansion_takes_over_without_a_jump() -> None:
    assert t_critical_95(1) == 12.706 and t_critical_95(2) == 4.303 and t_critical_95(30) == 2.042
    assert math.isnan(t_critical_95(0))
    assert 2.035 < t_critical_95(31) < t_critical_95(30)  # scipy: t(0.975, 31) = 2.0395
    assert t_critical_95(31) == pytest.approx(2.0395, abs=1e-3)


def test_ci_half_width_of_two_values() -> None:
    # t(1) = 12.706, sd of [1, 3] = sqrt(2), n = 2: 12.706 * sqrt(2) / sqrt(2)
    assert ci95_halfwidth([1.0, 3.0]) == pytest.approx(12.706)


def test_summary_percentiles_interpolate_between_ranks() -> None:
    s = summarize([0.0, 10.0])
    assert (s["p50"], s["p90"], s["p95"], s["p99"]) == pytest.approx((5.0, 9.0, 9.5, 9.9))
    assert set(s) == {"n", "mean", "p50", "p90", "p95", "p99", "min", "max"}
