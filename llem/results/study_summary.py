"""End-of-study summary: `summary.csv` / `summary.parquet` in the sweep folder and a terminal table.

The sweeper calls `write_sweep_summary(sweep_dir)` after the launcher returns. One row per config
(the overrides that differ between configs name it): output tok/s, J/output token, TTFT p50 and
ITL p50, each mean ± 95 % CI half-width over its completed cycles; then failed jobs with their error
and skipped jobs (from manifest.json) with the reason they were not launched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llem.results import (
    ITL_P50,
    J_PER_TOKEN,
    THROUGHPUT,
    TTFT_P50,
    config_label,
    load,
    parse_override,
    varying_overrides,
)
from llem.results.aggregate import CV_THRESHOLD, aggregate, pareto_front
from llem.results.axes import RATE_FIELD, rate_columns, request_rate
from llem.results.compare import NAMES
from llem.results.tables import write_table
from llem.study import manifest as manifest_mod

SUMMARY_STEM = "summary"
MAX_REASON = 100
# `pareto.<name>` columns: the config is on the throughput-vs-<metric> Pareto front
PARETO = {"energy": J_PER_TOKEN, "ttft": TTFT_P50, "itl": ITL_P50}


def fixed(x: float, sig: int) -> str:
    """`x` to `sig` significant digits in plain notation (12350, 0.06543), never 1.2e+04."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = sig - 1 - math.floor(math.log10(abs(x)))
    return f"{round(x, decimals):.{max(decimals, 0)}f}"


def fmt_ci(mean: Any, half: Any, scale: float = 1.0) -> str:
    """`668.7 ± 12` (4 significant digits, CI to 2), `668.7` for one cycle, `n/a` without a value."""
    if not _number(mean):
        return "n/a"
    text = fixed(mean * scale, 4)
    if not _number(half):
        return text
    return f"{text} ± {fixed(half * scale, 2)}"


def _short(text: Any, limit: int = MAX_REASON) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(header), *(fmt(r) for r in rows)]


def _skipped(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Skipped configs from the manifest: one entry per config (its jobs' indices together)."""
    if not manifest:
        return []
    by_config: dict[str, dict[str, Any]] = {}
    for job in manifest.get("jobs", []):
        if job.get("status") != "skipped":
            continue
        key = str(job.get("config_hash") or job.get("overrides"))
        entry = by_config.setdefault(key, {"indices": [], "overrides": job.get("overrides") or [],
                                           "config_hash": job.get("config_hash"),
                                           "reason": job.get("reason") or job.get("skip_reason")
                                           or (job.get("error") or {}).get("message") or "invalid config"})
        entry["indices"].append(job.get("index"))
    return list(by_config.values())


_ENDED = ("failed", "timeout")  # manifest states of a job that ran and failed (interrupted ones count as not run)


def _not_run(manifest: dict[str, Any] | None, jobs: pd.DataFrame) -> list[dict[str, Any]]:
    """Manifest jobs that never left a result.json (planned but not launched, or lost)."""
    if not manifest:
        return []
    seen = set(zip(jobs.get("config_hash", []), jobs.get("cycle", [])))
    return [j for j in manifest.get("jobs", []) if j.get("status") not in ("skipped",)
            and (j.get("config_hash"), j.get("cycle")) not in seen and j.get("status") != "completed"]


def summary_frame(jobs: pd.DataFrame, manifest: dict[str, Any] | None = None,
                  cv_threshold: float = CV_THRESHOLD) -> pd.DataFrame:
    """The per-config table written as summary.csv: `config` label, aggregate statistics, Pareto-front
    membership (`pareto.energy`: no other config has more tok/s and fewer J/token; `pareto.ttft`,
    `pareto.itl` likewise for latency), and one row per skipped config (`skipped_reason`)."""
    agg = aggregate(jobs, cv_threshold=cv_threshold)
    varying = varying_overrides(jobs)
    labels = [config_label(row, varying or [c for c in agg.columns if c.startswith("override.")])
              for _, row in agg.iterrows()]
    agg.insert(0, "config", [lab or "(defaults)" for lab in labels])
    for name, metric in PARETO.items():  # more throughput and less of the metric: not beaten on both
        if f"{metric}.mean" in agg and agg[f"{metric}.mean"].notna().any():
            agg[f"pareto.{name}"] = pareto_front(agg[f"{THROUGHPUT}.mean"].tolist(), agg[f"{metric}.mean"].tolist())
    skipped = _skipped(manifest)
    if skipped:
        extra = []
        for s in skipped:
            row: dict[str, Any] = {"config": " ".join(s["overrides"]), "config_hash": s["config_hash"],
                                   "n_jobs": 0, "n_completed": 0, "n_failed": 0, "skipped_reason": s["reason"]}
            for text in s["overrides"]:
                key, value = parse_override(str(text))
                if f"override.{key}" in agg.columns:
                    row[f"override.{key}"] = value
            extra.append(row)
        agg = pd.concat([agg, pd.DataFrame.from_records(extra)], ignore_index=True) if not agg.empty \
            else pd.DataFrame.from_records(extra)
    return agg


CONFIG_HEADER = ["config", "n", "output tok/s", "J/output token", "TTFT p50 ms", "ITL p50 ms", "note"]


def config_rows(configs: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the per-config table (terminal and report page)."""
    rows = []
    for _, r in configs.iterrows():
        note = ""
        if not r.get("n_completed"):
            note = "no completed job"
        elif isinstance(r.get("unstable"), (bool, np.bool_)) and r.get("unstable"):
            cvs = [f"{NAMES.get(m, m)} CV {r[f'{m}.cv']:.1%}" for m in str(r["unstable_metrics"]).split(", ")]
            note = "UNSTABLE: " + ", ".join(cvs)
        if isinstance(r.get("pareto.energy"), (bool, np.bool_)) and r.get("pareto.energy"):
            note = "; ".join(x for x in ("energy Pareto front", note) if x)
        n = r.get(f"{THROUGHPUT}.n")
        rows.append([str(r["config"]), str(int(n)) if _number(n) else "0",
                     fmt_ci(r.get(f"{THROUGHPUT}.mean"), r.get(f"{THROUGHPUT}.ci95")),
                     fmt_ci(r.get(f"{J_PER_TOKEN}.mean"), r.get(f"{J_PER_TOKEN}.ci95")),
                     fmt_ci(r.get(f"{TTFT_P50}.mean"), r.get(f"{TTFT_P50}.ci95"), 1000),
                     fmt_ci(r.get(f"{ITL_P50}.mean"), r.get(f"{ITL_P50}.ci95"), 1000), note])
    return CONFIG_HEADER, rows


def _number(v: Any) -> bool:
    """A real number (not None, NaN or pd.NA)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def render_summary(jobs: pd.DataFrame, table: pd.DataFrame, manifest: dict[str, Any] | None,
                   sweep_dir: str | Path | None = None) -> str:
    """The compact terminal table (see module doc)."""
    configs = table[table.get("skipped_reason", pd.Series(index=table.index, dtype=object)).isna()] \
        if "skipped_reason" in table else table
    n_done = int((jobs["status"] == "completed").sum()) if not jobs.empty else 0
    failed = jobs[jobs["status"] != "completed"] if not jobs.empty else jobs
    skipped = _skipped(manifest)
    design = (manifest or {}).get("study_design_hash") or next(
        (h for h in jobs.get("study_design_hash", []) if isinstance(h, str)), None)
    lost = _not_run(manifest, jobs)
    # the manifest's word where a job's own result.json could not say it (its folder unwritable: no
    # result.json, or one left at "running"): such a job failed, it was not "not run"
    by_key = {(j.get("config_hash"), j.get("cycle")): j for j in (manifest or {}).get("jobs", [])}
    ended = [j for j in lost if j.get("status") in _ENDED]
    lost = [j for j in lost if j.get("status") not in _ENDED]
    head = f"llem study{' ' + design if design else ''}: {len(configs)} config(s), {len(jobs) + len(ended)} job(s): " \
           f"{n_done} completed, {len(failed) + len(ended)} failed/interrupted"
    if lost:  # planned jobs without a result.json (an interrupted study): counted, not hidden
        head += f", {len(lost)} not run"
    if skipped:
        head += f", {sum(len(s['indices']) for s in skipped)} skipped"
    lines = [head]
    served = request_counts(jobs)
    if served:
        lines.append("  " + served)
    energy = J_PER_TOKEN in jobs.columns and jobs[J_PER_TOKEN].notna().any()
    header, rows = config_rows(configs)
    if rows:
        lines += ["  " + line for line in _table(header, rows)]
        lines.append("  (mean ± 95 % CI half-width over cycles, Student t)")
    answer = slo_answer(serving_frame(jobs))
    if answer:
        lines += ["  " + line for line in answer]
    if not energy and not jobs.empty and "energy.reason" in jobs.columns:
        reason = next((x for x in jobs["energy.reason"] if isinstance(x, str) and x), None)
        if reason:
            lines.append(f"  energy not measured: {_short(reason)}")
    if len(failed) or ended:
        lines.append(f"failed ({len(failed) + len(ended)}):")
        label_cols = varying_overrides(jobs)
        for _, r in failed.iterrows():
            status, etype, emsg, reason = r["status"], r.get("error.type"), r.get("error.message"), r.get("error.reason")
            known = by_key.get((r.get("config_hash"), r.get("cycle"))) or {}
            if status == "running" and known.get("status") in _ENDED:  # its result.json could not be finished
                merr = known.get("error") or {}
                status, etype, emsg, reason = known["status"], merr.get("type"), merr.get("message"), merr.get("reason")
            err = f"{etype if isinstance(etype, str) and etype else status}: {_short(emsg if isinstance(emsg, str) else '')}"
            if isinstance(reason, str):
                err += f" [{reason}]"
            where = f"job {r['job_index']}" if not pd.isna(r.get("job_index")) else Path(str(r["job_dir"])).name
            lines.append(f"  {where}  {config_label(r, label_cols) or '(defaults)'}  {status}  {err}")
        for j in ended:
            merr = j.get("error") or {}
            err = f"{merr.get('type') or j.get('status')}: {_short(merr.get('message') or '')}"
            if merr.get("reason"):
                err += f" [{merr['reason']}]"
            lines.append(f"  job {j.get('index')}  {' '.join(j.get('overrides') or []) or '(defaults)'}  "
                         f"{j.get('status')} (no result.json)  {err}")
    if lost:
        lines.append(f"not run ({len(lost)}): " + ", ".join(
            f"job {j.get('index')} ({j.get('status')})" for j in lost[:20]) + (" ..." if len(lost) > 20 else ""))
    if skipped:
        lines.append(f"skipped ({sum(len(s['indices']) for s in skipped)} job(s), {len(skipped)} config(s)):")
        for s in skipped:
            idx = ",".join(str(i) for i in s["indices"])
            lines.append(f"  job {idx}  {' '.join(s['overrides'])}  reason: {_short(s['reason'])}")
    if sweep_dir is not None:
        lines.append(f"summary: {Path(sweep_dir) / (SUMMARY_STEM + '.csv')} (+ .parquet)"
                     + (f"; plots: python -m llem.report {sweep_dir}{_report_extra()}" if n_done else ""))
    return "\n".join(lines)


def _report_extra() -> str:
    """' (needs: pip install ...)' when the report's plotting package is not installed."""
    from llem.extras import installed, pip_line

    return "" if installed("report") else f" (needs matplotlib: {pip_line('report')})"


def request_counts(jobs: pd.DataFrame) -> str:
    """`serving requests: 800 sent, 600 succeeded, 200 failed (truncated 150, http_5xx 50)` over the study's
    serving jobs (failed jobs included: a job that died mid-run keeps its counts); "" without serving jobs."""
    col = "serving.requests.sent"
    if jobs.empty or col not in jobs.columns or not jobs[col].notna().any():
        return ""

    def total(c: str) -> int:
        return int(pd.to_numeric(jobs[c], errors="coerce").fillna(0).sum()) if c in jobs.columns else 0

    prefix = "serving.requests.failed_by_reason."
    reasons = {c[len(prefix):]: total(c) for c in jobs.columns if c.startswith(prefix)}
    why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]) if v)
    failed = total("serving.requests.failed")
    return (f"serving requests: {total(col)} sent, {total('serving.requests.succeeded')} succeeded, {failed} failed"
            + (f" ({why})" if why and failed else ""))


def write_sweep_summary(sweep_dir: str | Path, cv_threshold: float = CV_THRESHOLD) -> str:
    """Write summary.csv and summary.parquet into `sweep_dir`; return the terminal table."""
    sweep_dir = Path(sweep_dir)
    jobs = load(sweep_dir)
    manifest = manifest_mod.load(sweep_dir)
    table = summary_frame(jobs, manifest, cv_threshold)
    write_table(table, sweep_dir, SUMMARY_STEM)
    return render_summary(jobs, table, manifest, sweep_dir)


# -- serving studies: rate sweeps, the SLO answer --------------------------------------------------------
RATE = "serving.achieved_rate_s"
SLO_FRACTION = "serving.slo.fraction"
SERVING_J_PER_TOKEN = "serving.energy.j_per_output_token"
SERVING_METRICS = (RATE, SERVING_J_PER_TOKEN, "serving.energy.j_per_request", "serving.latency.ttft_s.p90",
                   "serving.latency.itl_s.p90", "serving.latency.tpot_s.p90", "serving.latency.e2e_s.p90",
                   SLO_FRACTION, "serving.slo.goodput_rate_s", "serving.throughput.output_tok_s",
                   "serving.energy.j_per_slo_request",
                   "serving.requests.sent", "serving.requests.succeeded", "serving.requests.failed")
SLO_KEYS = ("ttft_s", "tpot_s", "e2el_s")  # scenario.slo thresholds (vllm bench serve --goodput ttft/tpot/e2el)
SLO_TARGET = 0.9  # the answer's bar: at least this fraction of requests meet the SLO


def serving_frame(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per serving config: `config` and `series` (its label without the request rate), the
    study's SLO (`slo.ttft_s`, `slo.itl_s`) and SERVING_METRICS aggregated over cycles. Empty without
    serving jobs."""
    if jobs.empty or RATE not in jobs.columns:
        return pd.DataFrame()
    serving = jobs[jobs[RATE].notna() | (jobs.get("workload.scenario", pd.Series(index=jobs.index)) == "serving")]
    if serving.empty:
        return pd.DataFrame()
    agg = aggregate(serving, metrics=SERVING_METRICS, stability_metrics=())
    varying = varying_overrides(jobs)
    agg.insert(0, "config", [config_label(r, varying) or "(defaults)" for _, r in agg.iterrows()])
    rate_keys = rate_columns(serving, varying)  # the override(s) that set serving.request_rate
    agg.insert(1, "series", [config_label(r, [c for c in varying if c not in rate_keys]) or str(r.get("backend"))
                             for _, r in agg.iterrows()])
    first = serving.groupby(serving["config_hash"].astype("string"), sort=False).first()
    asked = request_rate(serving).groupby(serving["config_hash"].astype("string"), sort=False).first()
    agg[RATE_FIELD] = agg["config_hash"].astype("string").map(asked)  # each config's asked rate (inf: all at once)
    for key in SLO_KEYS:
        col = f"serving.slo.{key}"
        if key == "tpot_s" and col not in first and "serving.slo.itl_s" in first:
            col = "serving.slo.itl_s"  # results before the rename: itl_s was the request's mean ITL (TPOT)
        agg[f"slo.{key}"] = agg["config_hash"].astype("string").map(first[col]) if col in first else math.nan
    agg["slo.itl_s"] = agg["slo.tpot_s"]  # older name of the same threshold
    return agg


def slo_text(ttft: float | None, tpot: float | None, e2el: float | None) -> str:
    """`TTFT <= 500 ms, mean ITL <= 50 ms` for the thresholds that are set (mean ITL = vLLM's TPOT)."""
    parts = [f"{name} <= {v * 1000:g} ms" for name, v in (("TTFT", ttft), ("mean ITL", tpot), ("e2e", e2el))
             if v is not None]
    return ", ".join(parts) or "no threshold"


def _num_or_none(v: Any) -> float | None:
    return float(v) if _number(v) else None


def slo_answer(frame: pd.DataFrame, target: float = SLO_TARGET) -> list[str]:
    """Per backend: the config with the lowest J/output token among those where >= target of requests
    met the study's SLO (TTFT and mean ITL within it), or why there is none."""
    if frame.empty:
        return []
    lines = []
    cols = [f"slo.{k}" for k in SLO_KEYS]
    keys = [tuple(_num_or_none(r[c]) for c in cols) for _, r in frame[cols].iterrows()]
    for key in dict.fromkeys(keys):
        if all(v is None for v in key):
            continue
        lines.append(f"lowest J/output token with >= {target:.0%} of requests within the SLO ({slo_text(*key)}):")
        mine = frame[[k == key for k in keys]]
        for backend, part in mine.groupby(mine["backend"].fillna("?"), sort=False):
            frac = part.get(f"{SLO_FRACTION}.mean", pd.Series(dtype=float))
            ok = part[frac >= target]
            if ok.empty:
                best = part.loc[frac.idxmax()] if frac.notna().any() else None
                why = (f"best {best[f'{SLO_FRACTION}.mean']:.0%} at {best['config']}" if best is not None
                       else "no completed serving job")
                lines.append(f"  {backend}: none ({why})")
                continue
            jpt = ok.get(f"{SERVING_J_PER_TOKEN}.mean", pd.Series(dtype=float))
            if not jpt.notna().any():
                lines.append(f"  {backend}: energy not measured; configs meeting the SLO: "
                             + ", ".join(ok["config"].astype(str)))
                continue
            r = ok.loc[jpt.idxmin()]
            lines.append(f"  {backend}: {r['config']}: {fixed(r[f'{SERVING_J_PER_TOKEN}.mean'], 4)} J/output token, "
                         f"{r[f'{SLO_FRACTION}.mean']:.0%} within the SLO, "
                         f"{fixed(r[f'{RATE}.mean'], 3)} req/s achieved")
    return lines
