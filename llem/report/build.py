"""`python -m llem.report <folder> [--out DIR] [--vs OTHER]`: tables, plots and one Markdown page.

Reads every result under `folder` (llem.results.load), aggregates by config across cycles, and
writes into `--out` (default `<folder>/report`): jobs.csv/.parquet (one row per job),
configs.csv/.parquet (one row per config, mean/std/CV/95 % CI per metric), PNG plots and
`report.md` embedding them. A plot that needs data the study lacks (no energy on a CPU-only
host, one batch size, no timeseries) is replaced on the page by a sentence saying so.
With `--vs OTHER`: compare.csv/.parquet and compare.png, ratios OTHER/folder per matched config
(llem.results.compare documents the method).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llem.errors import UserError
from llem.io import TornFile, atomic_write_text
from llem.report.pareto import search_section
from llem.results import (
    J_PER_TOKEN,
    THROUGHPUT,
    load,
    load_requests,
    load_timeseries,
    varying_overrides,
)
from llem.results.aggregate import CV_THRESHOLD, STABILITY_METRICS
from llem.results.axes import batch_columns
from llem.results.compare import compare, render_compare
from llem.results.study_summary import config_rows, render_summary, serving_frame, slo_answer, summary_frame
from llem.results.tables import write_table
from llem.study import manifest as manifest_mod

PAGE = "report.md"


class ReportError(UserError, ValueError):
    """Bad input to the report (no results, unknown folder): the message says what and where."""


@dataclass
class Report:
    out_dir: Path
    page: Path
    files: list[Path] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # figure → why it was not drawn
    text: str = ""  # what the command prints


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(esc, r)) + " |" for r in rows)]


def _read_or_note(loader: Any, job_dir: str, torn: dict[str, str] | None) -> pd.DataFrame | None:
    """A job's side file through `loader`, or None with the torn file noted (path → why)."""
    try:
        return loader(job_dir)
    except TornFile as e:
        if torn is not None:
            torn[e.path] = e.why
        return None


def _requests_by_config(jobs: pd.DataFrame, configs: pd.DataFrame,
                        torn: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """Every completed job's requests.jsonl, pooled per config (cycles together), keyed by label;
    torn files are left out and noted in `torn` (path → why)."""
    label = dict(zip(configs["config_hash"], configs["config"]))
    out: dict[str, list[pd.DataFrame]] = {}
    for _, job in jobs[jobs["status"] == "completed"].iterrows():
        frame = _read_or_note(load_requests, job["job_dir"], torn)
        if frame is not None and job["config_hash"] in label:
            out.setdefault(label[job["config_hash"]], []).append(frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def _timeseries_job(jobs: pd.DataFrame, job: str | None,
                    torn: dict[str, str] | None = None) -> tuple[pd.Series, pd.DataFrame] | str:
    if job is not None:
        match = jobs[jobs["job_dir"].map(lambda d: Path(d).resolve() == Path(job).resolve())]
        if match.empty:
            raise ReportError(f"--job={job!r} is not a job folder of this report: allowed one of the "
                              f"job_dir values in jobs.csv")
        candidates = match
    else:
        candidates = jobs[jobs["status"] == "completed"]
    for _, row in candidates.iterrows():
        series = _read_or_note(load_timeseries, row["job_dir"], torn)
        if series is not None and not series.empty:
            return row, series
    return ("no timeseries.parquet in these jobs: an energy meter that samples power (nvml, rapl) writes "
            "one beside result.json")


def _torn_results(jobs: pd.DataFrame) -> dict[str, str]:
    """result.json files llem.results.load could not read (its CorruptResult rows)."""
    if "error.type" not in jobs:
        return {}
    bad = jobs[jobs["error.type"] == "CorruptResult"]
    return {str(Path(str(r["job_dir"])) / "result.json"): str(r.get("error.message") or "unreadable")
            for _, r in bad.iterrows()}


def _group_keys(jobs: pd.DataFrame) -> list[str]:
    swept = varying_overrides(jobs)  # the batch axis (workload.batch_size) is not a line
    varying = [c for c in swept if c not in batch_columns(jobs, swept)]
    return (["backend"] if jobs["backend"].nunique() > 1 else []) + [c for c in varying if c != "override.backend"]


def build_report(folder: str | Path, out: str | Path | None = None, vs: str | Path | None = None,
                 cv_threshold: float = CV_THRESHOLD, job: str | None = None) -> Report:
    """Write the report for `folder` (and the comparison with `vs`); returns what was written."""
    from llem.report import plots, settings_plot  # matplotlib only here

    folder = Path(folder)
    if not folder.exists():
        raise ReportError(f"folder={str(folder)!r} does not exist: allowed a run folder, a sweep folder or a "
                          "tree of them (e.g. multirun/)")
    jobs = load(folder)
    if jobs.empty:
        raise ReportError(f"no result.json under {str(folder)!r}: allowed a folder that holds llem results")
    manifest, manifest_torn = manifest_mod.read(folder) if folder.is_dir() else (None, None)
    torn = _torn_results(jobs)  # path → why: listed on the page; resume redoes those jobs
    if manifest_torn:
        torn[str(folder / manifest_mod.MANIFEST_FILE)] = manifest_torn + " (rebuilt from the job folders)"
        manifest = manifest_mod.rebuild(folder)
    table = summary_frame(jobs, manifest, cv_threshold)
    configs = table[table["skipped_reason"].isna()] if "skipped_reason" in table else table
    out_dir = Path(out) if out is not None else (folder if folder.is_dir() else folder.parent) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("compare.*"):  # an earlier --vs into this folder: not this report's
        stale.unlink(missing_ok=True)
    rep = Report(out_dir=out_dir, page=out_dir / PAGE)
    rep.files += write_table(jobs, out_dir, "jobs")
    rep.files += write_table(table, out_dir, "configs")

    figures: list[tuple[str, str, Path | str]] = []
    energy = J_PER_TOKEN in jobs and jobs[J_PER_TOKEN].notna().any()
    reason = next((x for x in jobs.get("energy.reason", []) if isinstance(x, str) and x), None)
    no_energy = "energy was not measured in this study" + (f" ({reason})" if reason else "") + \
        "; the throughput and latency plots below stand in for it"
    groups = _group_keys(jobs)

    result = plots.energy_vs_throughput(configs, out_dir / "energy_vs_throughput.png")
    figures.append(("Energy per output token vs throughput", "energy_vs_throughput",
                    result if energy else no_energy))
    figures.append(("Latency vs throughput", "latency_vs_throughput",
                    plots.latency_vs_throughput(configs, out_dir / "latency_vs_throughput.png")))
    figures.append(("Energy per output token vs batch size", "j_per_token_vs_batch",
                    plots.metric_vs_batch(configs, J_PER_TOKEN, out_dir / "j_per_token_vs_batch.png", groups)
                    if energy else no_energy))
    figures.append(("Throughput vs batch size", "throughput_vs_batch",
                    plots.metric_vs_batch(configs, THROUGHPUT, out_dir / "throughput_vs_batch.png", groups)))
    figures.append(("Latency distributions", "latency_distributions",
                    plots.latency_distributions(_requests_by_config(jobs, configs, torn),
                                                out_dir / "latency_distributions.png")))
    serving = serving_frame(jobs)  # serving studies: energy and latency against load, the SLO answer
    if not serving.empty:
        slo = serving[["slo.ttft_s", "slo.tpot_s"]].iloc[0] if len(serving) else None  # the study's SLO
        ttft, tpot = ((float(slo.iloc[0]) if pd.notna(slo.iloc[0]) else None,
                       float(slo.iloc[1]) if pd.notna(slo.iloc[1]) else None) if slo is not None else (None, None))
        figures.append(("Serving: J/request, TTFT p90, TPOT p90, ITL p90 and SLO attainment vs achieved request rate",
                        "serving_vs_rate", plots.serving_vs_rate(serving, out_dir / "serving_vs_rate.png", ttft, tpot)))
        rep.files += write_table(serving, out_dir, "serving")
    picked = _timeseries_job(jobs, job, torn)
    if isinstance(picked, str):
        figures.append(("Power and temperature over time", "timeseries", picked))
        ts_job = None
    else:
        ts_job, series = picked
        window = ts_job.get("timing.window_s")
        figures.append((f"Power and temperature over time (job {ts_job['job_dir']})", "timeseries",
                        plots.power_and_temperature(series, window if isinstance(window, float) else None,
                                                    out_dir / "timeseries.png",
                                                    f"{ts_job.get('backend')} job {Path(ts_job['job_dir']).name}: "
                                                    "power and temperature")))

    figures += settings_plot.figures(jobs, out_dir)  # gpu.* sweeps: J/token vs the setting, the SLO answer
    compare_text, compare_md = "", []
    if vs is not None:
        vs = Path(vs)
        jobs_b = load(vs) if vs.exists() else pd.DataFrame()
        if jobs_b.empty:
            raise ReportError(f"--vs={str(vs)!r}: no result.json there; allowed a folder that holds llem results")
        cmp, matching = compare(jobs, jobs_b)
        _say_differences(matching, jobs, jobs_b)
        rep.files += write_table(cmp, out_dir, "compare")
        compare_text = render_compare(cmp, matching, str(folder), str(vs))
        fig = plots.compare_ratios(cmp, out_dir / "compare.png", str(folder), str(vs))
        figures.append((f"Comparison: B = {vs} vs A = {folder}", "compare", fig))
        compare_md = ["```", compare_text, "```", "",
                      "Ratio B/A of geometric means over cycles; 95 % CI from Welch's t on log values "
                      "(Welch–Satterthwaite df). Configs are matched by config hash, else by the values of "
                      "the settings swept in either study (`llem/results/compare.py`). "
                      "[compare.csv](compare.csv)"]

    for _, _, fig in figures:
        if isinstance(fig, Path):
            rep.files.append(fig)
    rep.notes = {name: fig for _, name, fig in figures if isinstance(fig, str)}
    page = _page(folder, jobs, table, configs, manifest, figures, compare_md, cv_threshold, torn)
    page += search_section(folder, jobs)  # study.objective: the Pareto front over trials (llem/report/pareto.py)
    if not serving.empty:
        page += "\n".join(["", "## Serving: the SLO answer", "", "```", *slo_answer(serving), "```", "",
                           "SLO: a succeeded request meets it when each threshold set (TTFT, mean ITL = vLLM's "
                           "TPOT, e2e) holds, as vllm bench serve --goodput; J/output token is over the whole "
                           "measurement window. Per config, with requests sent/succeeded/failed: "
                           "[serving.csv](serving.csv)", ""])
    atomic_write_text(rep.page, page)
    rep.files.append(rep.page)
    torn_text = (f"torn files: {len(torn)} (listed in {rep.page.name}; python -m llem -m ... study.resume=true "
                 "runs those jobs again)") if torn else ""
    rep.text = "\n".join(x for x in (render_summary(jobs, table, manifest), compare_text, torn_text,
                                     f"report: {rep.page} ({len(rep.files)} files in {out_dir})") if x)
    return rep


def _page(folder: Path, jobs: pd.DataFrame, table: pd.DataFrame, configs: pd.DataFrame,
          manifest: dict[str, Any] | None, figures: list[tuple[str, str, Path | str]], compare_md: list[str],
          cv_threshold: float, torn: dict[str, str] | None = None) -> str:
    status = jobs["status"].value_counts().to_dict()
    designs = sorted({h for h in jobs["study_design_hash"] if isinstance(h, str)})
    lines = [f"# llem report: `{folder}`", "",
             f"{len(jobs)} jobs ({', '.join(f'{n} {s}' for s, n in status.items())}), {len(configs)} configs"
             + (f", study design {', '.join(designs)}" if designs else "")
             + f". Generated {_dt.datetime.now().isoformat(timespec='seconds')}.", "",
             "## Configs", ""]
    header, rows = config_rows(configs)
    lines += _md_table(header, rows)
    names = " and ".join(STABILITY_METRICS)
    lines += ["", f"Mean ± 95 % CI half-width over the completed cycles of each config (Student t, n − 1 df). "
              f"UNSTABLE: the coefficient of variation of {names} across cycles exceeds {cv_threshold:.0%}.",
              "", "Tables: [configs.csv](configs.csv) / configs.parquet (one row per config), "
              "[jobs.csv](jobs.csv) / jobs.parquet (one row per job).", ""]
    for title, name, fig in figures:
        if name == "compare":
            continue
        lines += [f"## {title}", ""]
        lines += [f"![{title}]({fig.name})" if isinstance(fig, Path) else f"> {fig}", ""]
    failed = jobs[jobs["status"] != "completed"]
    skipped = table[table["skipped_reason"].notna()] if "skipped_reason" in table else table.iloc[0:0]
    if len(failed) or len(skipped):
        lines += ["## Failed and skipped jobs", ""]
        rows = [[Path(str(r["job_dir"])).name, str(r["status"]), str(r.get("error.type") or ""),
                 " ".join(str(r.get("error.message") or "").split())[:200]] for _, r in failed.iterrows()]
        rows += [["-", "skipped", s["config"], str(s["skipped_reason"])] for _, s in skipped.iterrows()]
        lines += _md_table(["job", "status", "error / config", "message / reason"], rows) + [""]
    if torn:
        lines += ["## Torn files", "", "Files that could not be read (truncated, empty, not UTF-8, the wrong type). "
                  "Their jobs count as not completed: `study.resume=true` runs them again and keeps these "
                  "files beside the new ones as `<name>.torn-<time>`.", ""]
        lines += _md_table(["file", "why"], [[path, why] for path, why in sorted(torn.items())]) + [""]
    cmp = [f for f in figures if f[1] == "compare"]
    if cmp:
        title, _, fig = cmp[0]
        lines += [f"## {title}", "", *compare_md, ""]
        lines += [f"![{title}]({fig.name})" if isinstance(fig, Path) else f"> {fig}", ""]
    return "\n".join(lines)


def _say_differences(matching: Any, jobs_a: pd.DataFrame, jobs_b: pd.DataFrame) -> None:
    """For configs matched by their overrides (different hashes): in what their configs differ."""
    from llem.results.confdiff import differences, job_config

    def first_dir(jobs: pd.DataFrame, h: str) -> str | None:
        rows = jobs[jobs["config_hash"] == h]
        return str(rows["job_dir"].iloc[0]) if len(rows) else None

    for ha, hb, how in matching.pairs:
        if how == "config_hash":
            continue
        da, db = first_dir(jobs_a, ha), first_dir(jobs_b, hb)
        matching.differences[(ha, hb)] = differences(job_config(da), job_config(db)) if da and db else []
