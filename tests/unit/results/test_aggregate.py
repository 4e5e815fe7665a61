"""llem.results.aggregate on hand-made job tables: per-config statistics of completed jobs only, the
unstable flag on its threshold, row order, and the Pareto front on known points."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from llem.results.aggregate import aggregate, metric_stats, pareto_front

TPUT, JPT = "throughput.output_tok_s", "energy.j_per_output_token"


def _jobs() -> pd.DataFrame:
    return pd.DataFrame({
        "config_hash": ["b", "a", "b", "a", "b", "a"],
        "status": ["completed", "completed", "completed", "failed", "completed", "completed"],
        "override.n": [8, 4, 8, 4, 8, 4],
        "backend": ["pytorch"] * 6,
        TPUT: [100.0, 50.0, 110.0, 9999.0, 90.0, 50.0],
        JPT: [1.0, 2.0, 1.0, None, 1.0, 2.0],
    })


def test_metric_stats_on_known_numbers_and_missing_values_left_out() -> None:
    s = metric_stats([1.0, 2.0, 3.0, 4.0, None, math.nan])
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(1.2909944)
    assert s["cv"] == pytest.approx(1.2909944 / 2.5)
    assert s["ci95"] == pytest.approx(3.182 * 1.2909944 / 2)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((2.5 - s["ci95"], 2.5 + s["ci95"]))
    one = metric_stats([7.0])
    assert one["n"] == 1 and one["mean"] == 7.0 and math.isnan(one["cv"]) and math.isnan(one["ci95"])


def test_one_row_per_config_in_first_seen_order_with_completed_jobs_only() -> None:
    out = aggregate(_jobs())
    assert out["config_hash"].tolist() == ["b", "a"]
    a = out.set_index("config_hash").loc["a"]
    assert (a["n_jobs"], a["n_completed"], a["n_failed"]) == (3, 2, 1)
    assert a[f"{TPUT}.mean"] == 50.0 and a[f"{TPUT}.n"] == 2  # the failed job's 9999 does not enter
    assert a["override.n"] == 4 and a["backend"] == "pytorch"
    b = out.set_index("config_hash").loc["b"]
    assert b[f"{TPUT}.mean"] == 100.0 and b[f"{TPUT}.std"] == pytest.approx(10.0)


def test_unstable_when_a_stability_metrics_cv_exceeds_the_threshold_not_at_it() -> None:
    out = aggregate(_jobs(), cv_threshold=0.1).set_index("config_hash")  # b's throughput CV is exactly 0.1
    assert not out.loc["b", "unstable"] and not out.loc["a", "unstable"]
    out = aggregate(_jobs(), cv_threshold=0.0999).set_index("config_hash")
    assert out.loc["b", "unstable"] and out.loc["b", "unstable_metrics"] == TPUT
    assert pd.isna(out.loc["a", "unstable_metrics"]) and out.loc["b", "cv_threshold"] == 0.0999


@pytest.mark.parametrize("bad", [0, -0.05])
def test_a_threshold_of_zero_or_below_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="cv_threshold"):
        aggregate(_jobs(), cv_threshold=bad)


def test_no_jobs_gives_an_empty_table_with_the_count_columns() -> None:
    out = aggregate(pd.DataFrame())
    assert out.empty and list(out.columns) == ["config_hash", "n_jobs", "n_completed", "n_failed", "unstable"]


def test_pareto_front_on_known_points() -> None:
    # (tok/s, J/token): A beats C on both; B and A trade off; D equals A (neither dominates); E is missing.
    xs = [100.0, 200.0, 90.0, 100.0, None]
    ys = [1.0, 2.0, 1.5, 1.0, 0.5]
    assert pareto_front(xs, ys) == [True, True, False, True, False]
    assert pareto_front([1.0, 2.0], [1.0, 1.0]) == [False, True]  # equal y, more x: dominates
    assert pareto_front([1.0, 2.0], [1.0, 2.0], maximize_x=False, minimize_y=False) == [True, True]
    assert pareto_front([1.0, 2.0], [1.0, 2.0], maximize_x=False) == [True, False]  # less x and less y
    assert pareto_front([math.nan, 1.0], [1.0, 1.0]) == [False, True]
