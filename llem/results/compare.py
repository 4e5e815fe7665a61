"""Compare two studies (pure): per-config ratios B/A of the key metrics with 95 % confidence intervals.

Ratio method (log-ratio Welch t): for a metric with cycles a₁..aₙ in study A and b₁..bₘ in study B,
d = mean(log b) − mean(log a), se² = s²(log a)/n + s²(log b)/m, Welch–Satterthwaite degrees of freedom
ν (rounded down, conservative), and the ratio is exp(d) with CI exp(d ± t(0.975, ν)·se). exp(d) is the
ratio of geometric means, which for the few-percent spread of repeated measurements equals the ratio
of means to well under the CI width; the log scale keeps the interval positive and symmetric in
B/A vs A/B. With one cycle on either side the ratio is given without an interval.

Matching: a config of A and a config of B are the same config when their `config_hash` is equal.
Configs left over are matched by their overrides: the key is the values of the settings that vary
within A or within B and are present in both (override columns, and `backend`). Settings constant
within each study — the ones that make the studies differ, e.g. `precision=fp16` in B only — are not
in the key, so `pytorch.batch_size=8` of A meets `pytorch.batch_size=8` of B. A key shared by two
configs of one study is ambiguous and left unmatched; with no key at all, one config against one is
matched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from llem.measure import stats
from llem.results import ITL_P50, J_PER_TOKEN, THROUGHPUT, TTFT_P50, config_label, override_columns

COMPARE_METRICS = (THROUGHPUT, J_PER_TOKEN, TTFT_P50, ITL_P50)
NAMES = {THROUGHPUT: "output tok/s", J_PER_TOKEN: "J/output token", TTFT_P50: "TTFT p50", ITL_P50: "ITL p50"}


def log_ratio_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Ratio B/A of geometric means and its 95 % CI (Welch t on logs); positive values only."""
    la = [math.log(x) for x in a if x is not None and not math.isnan(x) and x > 0]
    lb = [math.log(x) for x in b if x is not None and not math.isnan(x) and x > 0]
    na, nb = len(la), len(lb)
    out = {"ratio": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "df": math.nan,
           "n_a": na, "n_b": nb}
    if not na or not nb:
        return out
    d = stats.mean(lb) - stats.mean(la)
    out["ratio"] = math.exp(d)
    if na < 2 or nb < 2:
        return out
    va, vb = stats.std(la) ** 2 / na, stats.std(lb) ** 2 / nb
    se = math.sqrt(va + vb)
    # Welch–Satterthwaite; with no spread at all on either side, the pooled df
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)) if se > 0 else na + nb - 2
    t = stats.t_critical_95(max(1, math.floor(df)))
    out.update(ci95_low=math.exp(d - t * se), ci95_high=math.exp(d + t * se), df=df)
    return out


@dataclass
class Matching:
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (hash A, hash B, how)
    unmatched_a: list[str] = field(default_factory=list)
    unmatched_b: list[str] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)
    differences: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (hash A, hash B) -> "n: 4 vs 16"


def _configs(jobs: pd.DataFrame) -> pd.DataFrame:
    """First row of each config (its overrides), in order of appearance."""
    return jobs.drop_duplicates("config_hash").set_index("config_hash", drop=False)


def _varies(df: pd.DataFrame, col: str) -> bool:
    return df[col].astype("string").fillna("<unset>").nunique() > 1


def match_configs(jobs_a: pd.DataFrame, jobs_b: pd.DataFrame) -> Matching:
    """Pair the configs of two studies (module doc: by hash, then by the overrides)."""
    ca, cb = _configs(jobs_a), _configs(jobs_b)
    m = Matching()
    common = [h for h in ca.index if h in cb.index]
    m.pairs = [(h, h, "config_hash") for h in common]
    rest_a = ca[~ca.index.isin(common)]
    rest_b = cb[~cb.index.isin(common)]
    if rest_a.empty or rest_b.empty:
        m.unmatched_a, m.unmatched_b = list(rest_a.index), list(rest_b.index)
        return m
    candidates = ["backend", *sorted((set(override_columns(ca)) | set(override_columns(cb))) - {"override.backend"})]
    m.key_columns = [c for c in candidates if c in ca.columns and c in cb.columns and (_varies(ca, c) or _varies(cb, c))]
    if not m.key_columns:
        if len(rest_a) == 1 and len(rest_b) == 1:
            m.pairs.append((rest_a.index[0], rest_b.index[0], "single config"))
        else:
            m.unmatched_a, m.unmatched_b = list(rest_a.index), list(rest_b.index)
        return m

    def keyed(rest: pd.DataFrame) -> dict[tuple[str, ...], list[str]]:
        out: dict[tuple[str, ...], list[str]] = {}
        for h, row in rest.iterrows():
            key = tuple("<unset>" if pd.isna(row[c]) else str(row[c]) for c in m.key_columns)
            out.setdefault(key, []).append(str(h))
        return out

    ka, kb = keyed(rest_a), keyed(rest_b)
    how = "overrides"
    used_a, used_b = set(), set()
    for key, hashes in ka.items():
        if len(hashes) == 1 and len(kb.get(key, [])) == 1:
            m.pairs.append((hashes[0], kb[key][0], how))
            used_a.add(hashes[0])
            used_b.add(kb[key][0])
    m.unmatched_a = [h for h in rest_a.index if h not in used_a]
    m.unmatched_b = [h for h in rest_b.index if h not in used_b]
    return m


def compare(jobs_a: pd.DataFrame, jobs_b: pd.DataFrame,
            metrics: Sequence[str] = COMPARE_METRICS) -> tuple[pd.DataFrame, Matching]:
    """One row per matched config and metric: means, ratio B/A, its 95 % CI and whether it excludes 1."""
    done_a = jobs_a[jobs_a["status"] == "completed"]
    done_b = jobs_b[jobs_b["status"] == "completed"]
    matching = match_configs(done_a, done_b)
    label_cols = [c for c in override_columns(done_a) if _varies(done_a, c)] or override_columns(done_a)
    first_a = _configs(done_a)
    rows: list[dict[str, Any]] = []
    for ha, hb, how in matching.pairs:
        ga = done_a[done_a["config_hash"] == ha]
        gb = done_b[done_b["config_hash"] == hb]
        label = config_label(first_a.loc[ha], label_cols) or "(defaults)"
        for metric in metrics:
            if metric not in ga.columns or metric not in gb.columns:
                continue
            a, b = ga[metric].dropna().tolist(), gb[metric].dropna().tolist()
            if not a or not b:
                continue
            r = log_ratio_ci(a, b)
            low, high = r["ci95_low"], r["ci95_high"]
            rows.append({"config": label, "match": how, "config_hash_a": ha, "config_hash_b": hb,
                         "metric": metric, "n_a": r["n_a"], "n_b": r["n_b"], "mean_a": stats.mean(a),
                         "mean_b": stats.mean(b), "ratio": r["ratio"], "ci95_low": low, "ci95_high": high,
                         "df": r["df"],
                         "significant": None if math.isnan(low) else bool(low > 1 or high < 1)})
    return pd.DataFrame.from_records(rows, columns=[
        "config", "match", "config_hash_a", "config_hash_b", "metric", "n_a", "n_b", "mean_a", "mean_b",
        "ratio", "ci95_low", "ci95_high", "df", "significant"]), matching


def fmt_ratio(ratio: float, low: float, high: float) -> str:
    if math.isnan(ratio):
        return "n/a"
    if math.isnan(low):
        return f"{ratio:.3f}"
    return f"{ratio:.3f} [{low:.3f}, {high:.3f}]"


def render_compare(table: pd.DataFrame, matching: Matching, name_a: str, name_b: str) -> str:
    """Terminal table: one line per config, one column per metric, `ratio [low, high]` (B/A)."""
    lines = [f"B/A ratios (ratio of geometric means, 95 % CI, Welch t on logs): A = {name_a}, B = {name_b}"]
    if table.empty:
        lines.append("  no config of A matches one of B")
    else:
        metrics = [m for m in COMPARE_METRICS if m in set(table["metric"])]
        header = ["config", *[NAMES.get(m, m) for m in metrics], "matched by"]
        rows = []
        for (label, how), g in table.groupby(["config", "match"], sort=False):
            by_metric = {r["metric"]: r for _, r in g.iterrows()}
            cells = []
            for m in metrics:
                r = by_metric.get(m)
                cells.append("n/a" if r is None else fmt_ratio(r["ratio"], r["ci95_low"], r["ci95_high"])
                             + (" *" if r is not None and r["significant"] else ""))
            rows.append([str(label), *cells, str(how)])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for cells in [header, *rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        lines.append("  * the interval excludes 1: a difference beyond the cycle-to-cycle noise")
    if matching.key_columns and not table.empty and (table["match"] == "overrides").any():
        lines.append("  matched by overrides on: " + ", ".join(c.removeprefix("override.") for c in matching.key_columns)
                     + " (config hashes differ in settings constant within each study)")
        for (ha, hb), diff in matching.differences.items():
            lines.append(f"    {ha[:8]} vs {hb[:8]} differ in: {', '.join(diff) if diff else 'settings not recorded'}")
    if matching.unmatched_a or matching.unmatched_b:
        lines.append(f"  unmatched configs: {len(matching.unmatched_a)} in A, {len(matching.unmatched_b)} in B")
    return "\n".join(lines)
