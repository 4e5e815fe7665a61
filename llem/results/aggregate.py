"""Statistics across the cycles of each config (pure: a DataFrame in, a DataFrame out, no I/O).

Every completed job of one `config_hash` is one sample of that config. Per metric: n, mean, sample
std (n-1), CV = std/mean, and the 95 % confidence interval of the mean, mean ± t(0.975, n-1)·std/√n
(Student t, `llem.measure.stats`). A config is flagged `unstable` when the CV of any of its
stability metrics (output tok/s and J/output token by default) exceeds `cv_threshold`: its cycles
disagree more than the differences you would want to read off them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from llem.measure import stats
from llem.results import E2E_P50, ITL_P50, J_PER_TOKEN, THROUGHPUT, TTFT_P50, override_columns

CV_THRESHOLD = 0.05  # 5 %: cycles of a stable config on a quiet machine stay well inside this
METRICS = (THROUGHPUT, J_PER_TOKEN, TTFT_P50, ITL_P50, E2E_P50, "throughput.total_tok_s",
           "throughput.requests_s", "energy.energy_j", "energy.mean_power_w", "energy.wh_per_1000_queries",
           "timing.window_s")
STABILITY_METRICS = (THROUGHPUT, J_PER_TOKEN)
STATS = ("mean", "std", "cv", "ci95", "ci95_low", "ci95_high", "n")
# Per-config columns carried over from the jobs (equal across cycles of one config).
CONFIG_COLUMNS = ("backend", "model", "dataset", "precision", "workload.batch_size", "study_design_hash")


def metric_stats(values: Sequence[float]) -> dict[str, float | int]:
    """mean, std, cv, ci95 (half-width), ci95_low/high, n of the finite values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    m = stats.mean(xs)
    half = stats.ci95_halfwidth(xs)
    return {"mean": m, "std": stats.std(xs), "cv": stats.cv(xs) if n >= 2 else math.nan, "ci95": half,
            "ci95_low": m - half, "ci95_high": m + half, "n": n}


def aggregate(jobs: pd.DataFrame, metrics: Sequence[str] = METRICS, cv_threshold: float = CV_THRESHOLD,
              stability_metrics: Sequence[str] = STABILITY_METRICS, by: str = "config_hash") -> pd.DataFrame:
    """One row per config: its overrides, job counts, `<metric>.<stat>` for every metric present, and
    `unstable` / `unstable_metrics`. Only completed jobs enter the statistics; `n_failed` counts the rest.

    Rows keep the order in which configs first appear in `jobs`.
    """
    if cv_threshold <= 0:
        raise ValueError(f"cv_threshold={cv_threshold!r} is invalid: allowed a number > 0")
    metrics = [m for m in metrics if m in jobs.columns]
    overrides = override_columns(jobs)
    keep = [c for c in CONFIG_COLUMNS if c in jobs.columns]
    rows = []
    if jobs.empty or by not in jobs.columns:
        return pd.DataFrame(columns=[by, "n_jobs", "n_completed", "n_failed", "unstable"])
    keys = jobs[by].astype("string").fillna("<none>")
    for key, group in jobs.groupby(keys, sort=False):
        done = group[group["status"] == "completed"]
        first = (done if not done.empty else group).iloc[0]
        row: dict[str, object] = {by: None if key == "<none>" else key}
        for col in overrides + keep:
            row[col] = first.get(col)
        row.update(n_jobs=len(group), n_completed=len(done), n_failed=len(group) - len(done))
        unstable = []
        for metric in metrics:
            s = metric_stats(done[metric].tolist())
            for stat in STATS:
                row[f"{metric}.{stat}"] = s[stat]
            if metric in stability_metrics and s["n"] >= 2 and s["cv"] > cv_threshold:
                unstable.append(metric)
        row["unstable"] = bool(unstable)
        row["unstable_metrics"] = ", ".join(unstable) or None
        row["cv_threshold"] = cv_threshold
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def pareto_front(xs: Sequence[float], ys: Sequence[float], maximize_x: bool = True,
                 minimize_y: bool = True) -> list[bool]:
    """Which points no other point beats on both axes (default: more throughput, less J/token).

    A point is dominated when another is at least as good on both axes and better on one; points with
    a missing coordinate are never on the front.
    """
    sx = 1.0 if maximize_x else -1.0
    sy = -1.0 if minimize_y else 1.0
    pts = [(sx * x, sy * y) if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))
           else None for x, y in zip(xs, ys)]
    front = []
    for i, p in enumerate(pts):
        if p is None:
            front.append(False)
            continue
        dominated = any(q is not None and j != i and q[0] >= p[0] and q[1] >= p[1] and q != p
                        for j, q in enumerate(pts))
        front.append(not dominated)
    return front
