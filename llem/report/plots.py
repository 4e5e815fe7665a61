"""The report's PNG figures (matplotlib, Agg backend; the only module of llem that imports matplotlib).

Each function takes tidy frames (from llem.results) and a path, draws one figure, saves it and
returns the path, or returns a sentence saying why the figure cannot be drawn from this data (the
page prints it instead).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from llem.results import ITL_P50, J_PER_TOKEN, THROUGHPUT, TTFT_P50  # noqa: E402
from llem.results.aggregate import pareto_front  # noqa: E402
from llem.results.compare import COMPARE_METRICS, NAMES  # noqa: E402

DPI = 120
COLORS = plt.get_cmap("tab10").colors
MAX_LABELLED = 14  # more points than this: label only the Pareto front
MAX_BOXES = 30
HIGHER_IS_BETTER = {THROUGHPUT}


def short_label(label: str) -> str:
    """`pytorch.batch_size=8 precision=fp16` → `batch_size=8 precision=fp16` (last part of each key)."""
    return re.sub(r"(?:[\w-]+\.)+([\w-]+=)", r"\1", label)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(float(v))


def _save(fig: plt.Figure, path: Path) -> Path:
    import io

    from llem.io import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()  # rendered in memory, then written atomically: a re-run never leaves half a PNG
    fig.savefig(buf, dpi=DPI, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _maybe_log(ax: plt.Axes, axis: str, values: Sequence[float]) -> None:
    vals = [v for v in values if _finite(v) and v > 0]
    if vals and max(vals) / min(vals) > 30:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _floor_at_zero(ax: plt.Axes) -> None:
    """Throughput, energy and latency are never negative: a wide CI bar is cut at 0, not drawn below it."""
    for axis, get, set_ in (("x", ax.get_xlim, ax.set_xlim), ("y", ax.get_ylim, ax.set_ylim)):
        scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
        low, high = get()
        if scale == "linear" and low < 0 < high:
            set_(0, high)


def _scatter_front(ax: plt.Axes, configs: pd.DataFrame, x: str, y: str, yscale: float = 1.0) -> int:
    """Points per backend with CI bars, the Pareto front (more x, less y) ringed and joined; returns its size."""
    data = configs[configs[f"{x}.mean"].notna() & configs[f"{y}.mean"].notna()].reset_index(drop=True)
    xs = data[f"{x}.mean"].astype(float).tolist()
    ys = (data[f"{y}.mean"].astype(float) * yscale).tolist()
    front = pareto_front(xs, ys)
    backends = list(dict.fromkeys(data["backend"].fillna("?"))) if "backend" in data else ["?"]
    for i, backend in enumerate(backends):
        sel = data["backend"].fillna("?") == backend if "backend" in data else data.index == data.index
        part = data[sel]
        ax.errorbar(part[f"{x}.mean"], part[f"{y}.mean"] * yscale,
                    xerr=part[f"{x}.ci95"].fillna(0), yerr=(part[f"{y}.ci95"] * yscale).fillna(0),
                    fmt="o", ms=7, capsize=3, color=COLORS[i % len(COLORS)], label=backend, alpha=0.9)
    fx = sorted((x_, y_) for x_, y_, f in zip(xs, ys, front) if f)
    if fx:
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "--", color="black", lw=1.2, zorder=1)
        ax.scatter([p[0] for p in fx], [p[1] for p in fx], s=220, facecolors="none", edgecolors="black",
                   lw=1.5, label="Pareto front", zorder=3)
    label_all = len(data) <= MAX_LABELLED
    order = sorted(range(len(xs)), key=lambda k: xs[k])
    for rank, k in enumerate(order):  # alternate above/below along x so neighbours' labels do not collide
        if label_all or front[k]:
            text = short_label(re.sub(r"\bbackend=\S+\s*", "", str(data["config"].iloc[k]))) or str(data["config"].iloc[k])
            ax.annotate(text, (xs[k], ys[k]), textcoords="offset points", xytext=(7, 7 if rank % 2 == 0 else -13),
                        fontsize=8, color="#333333")
    _maybe_log(ax, "x", xs)
    _maybe_log(ax, "y", ys)
    _floor_at_zero(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return len(fx)


def energy_vs_throughput(configs: pd.DataFrame, path: Path) -> Path | str:
    if f"{J_PER_TOKEN}.mean" not in configs or configs[f"{J_PER_TOKEN}.mean"].notna().sum() == 0:
        return "energy was not measured in this study, so there is no energy-vs-throughput plot"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    _scatter_front(ax, configs, THROUGHPUT, J_PER_TOKEN)
    ax.set_xlabel("output throughput (tokens/s)")
    ax.set_ylabel("energy per output token (J)")
    ax.set_title("Energy per output token vs throughput (better: right and down)\n"
                 "mean over cycles, bars: 95 % CI", fontsize=11)
    return _save(fig, path)


def latency_vs_throughput(configs: pd.DataFrame, path: Path) -> Path | str:
    metrics = [m for m in (TTFT_P50, ITL_P50) if f"{m}.mean" in configs and configs[f"{m}.mean"].notna().any()]
    if not metrics or f"{THROUGHPUT}.mean" not in configs:
        return "no latency figures in these results"
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        _scatter_front(ax, configs, THROUGHPUT, m, yscale=1000.0)
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(f"{NAMES[m]} (ms)")
        ax.set_title(f"{NAMES[m]} vs throughput (better: right and down)", fontsize=11)
    return _save(fig, path)


AXIS = {THROUGHPUT: "output throughput (tokens/s)", J_PER_TOKEN: "energy per output token (J)"}


def metric_vs_batch(configs: pd.DataFrame, metric: str, path: Path, group_by: Sequence[str],
                    scale: float = 1.0) -> Path | str:
    """One line per group (backend and the swept settings other than batch size), CI bars."""
    col = "workload.batch_size"
    if f"{metric}.mean" not in configs or configs[f"{metric}.mean"].notna().sum() == 0:
        return f"no {NAMES.get(metric, metric)} figures in these results"
    data = configs[configs[f"{metric}.mean"].notna()] if col in configs else configs.iloc[0:0]
    if data.empty or data[col].nunique() < 2:
        return "only one batch size in this study: nothing to plot against batch size"
    keys = [k for k in group_by if k in data.columns]
    groups = data.groupby([data[k].astype("string").fillna("-") for k in keys], sort=False) if keys \
        else [("all", data)]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (name, g) in enumerate(groups):
        g = g.sort_values(col)
        name = name if isinstance(name, tuple) else (name,)
        label = " ".join(f"{k.removeprefix('override.')}={v}" if k.startswith("override.") else str(v)
                         for k, v in zip(keys, name)) or "all"
        ax.errorbar(g[col], g[f"{metric}.mean"] * scale, yerr=(g[f"{metric}.ci95"] * scale).fillna(0),
                    fmt="o-", ms=6, capsize=3, color=COLORS[i % len(COLORS)], label=short_label(label))
    sizes = sorted(data[col].dropna().unique())
    if sizes and min(sizes) > 0 and max(sizes) / min(sizes) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(int(s)) for s in sizes])
    _floor_at_zero(ax)
    ax.set_xlabel("batch size")
    ax.set_ylabel(AXIS.get(metric, metric))
    name = AXIS.get(metric, metric)
    ax.set_title(f"{name[0].upper()}{name[1:]} vs batch size\nmean over cycles, bars: 95 % CI",
                 fontsize=11)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    return _save(fig, path)


def latency_distributions(requests: dict[str, pd.DataFrame], path: Path) -> Path | str:
    """Per-request TTFT, ITL and end-to-end latency per config (box: quartiles, whiskers: 1.5 IQR)."""
    requests = {k: v for k, v in requests.items() if v is not None and not v.empty}
    if not requests:
        return "no requests.jsonl in these jobs (save_requests=false?): no latency distributions"
    labels = list(requests)[:MAX_BOXES]
    panels = [(c, t) for c, t in (("ttft_s", "time to first token"), ("itl_s", "inter-token latency (per request)"),
                                  ("e2e_s", "end-to-end latency")) if any(c in requests[k] for k in labels)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.5, max(3.0, 1.4 + 0.45 * len(labels))),
                             squeeze=False)
    for j, (ax, (col, title)) in enumerate(zip(axes[0], panels)):
        data = [(requests[k][col].dropna() * 1000).tolist() if col in requests[k] else [] for k in labels]
        ax.boxplot([d or [math.nan] for d in data], vert=False, widths=0.6, showfliers=True,
                   flierprops={"markersize": 3, "alpha": 0.5}, medianprops={"color": "black"},
                   patch_artist=True, boxprops={"facecolor": "#9ecae1"})
        ax.set_yticks(range(1, len(labels) + 1))
        ax.set_yticklabels([short_label(k) for k in labels] if j == 0 else [""] * len(labels), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("Latency per request, all cycles pooled", fontsize=11)
    return _save(fig, path)


def power_and_temperature(series: pd.DataFrame, window_s: float | None, path: Path, title: str) -> Path | str:
    """Power (and temperature, where the meter reads it) over the window, per device."""
    time_col = "elapsed_s" if "elapsed_s" in series else ("t_s" if "t_s" in series else None)
    if time_col is None or "power_w" not in series or series["power_w"].notna().sum() == 0:
        return "the timeseries has no power samples"
    series = series.copy()
    t = series[time_col].astype(float)
    series["_t"] = t - (t.min() if time_col == "t_s" else 0.0)
    has_temp = "temperature_c" in series and series["temperature_c"].notna().any()
    fig, axes = plt.subplots(2 if has_temp else 1, 1, figsize=(9, 6 if has_temp else 3.8), sharex=True,
                             squeeze=False)
    devices = list(dict.fromkeys(series["device"])) if "device" in series else [None]
    for row, (col, ylabel) in enumerate([("power_w", "power (W)"), ("temperature_c", "temperature (°C)")][
            : 2 if has_temp else 1]):
        ax = axes[row][0]
        for i, dev in enumerate(devices):
            part = series if dev is None else series[series["device"] == dev]
            part = part[part[col].notna()].sort_values("_t")
            if not part.empty:
                ax.plot(part["_t"], part[col], "-o", ms=2.5, lw=1.2, color=COLORS[i % len(COLORS)],
                        label=str(dev or col))
        if window_s and time_col == "elapsed_s":
            ax.axvspan(0, window_s, color="#fdd49e", alpha=0.35, label="measurement window" if row == 0 else None)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if row == 0:
            ax.legend(fontsize=8, loc="best")
    axes[-1][0].set_xlabel("seconds since the window started" if time_col == "elapsed_s" else "seconds")
    axes[0][0].set_title(title, fontsize=11)
    return _save(fig, path)


def compare_ratios(table: pd.DataFrame, path: Path, name_a: str, name_b: str) -> Path | str:
    """Forest plot: ratio B/A per config with its 95 % CI, one panel per metric, a line at 1."""
    if table.empty:
        return "no config of the two studies matched: nothing to compare"
    metrics = [m for m in COMPARE_METRICS if m in set(table["metric"])]
    labels = list(dict.fromkeys(table["config"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 2.5, 1.5 + 0.42 * len(labels)),
                             squeeze=False, sharey=True)
    for ax, m in zip(axes[0], metrics):
        part = table[table["metric"] == m].set_index("config")
        for y, label in enumerate(labels):
            if label not in part.index:
                continue
            r = part.loc[label]
            sig = bool(r["significant"]) if r["significant"] is not None and not pd.isna(r["significant"]) else False
            better = (r["ratio"] > 1) == (m in HIGHER_IS_BETTER)
            color = ("#2ca02c" if better else "#d62728") if sig else "#555555"
            if _finite(r["ci95_low"]):
                ax.plot([r["ci95_low"], r["ci95_high"]], [y, y], color=color, lw=2)
            ax.plot([r["ratio"]], [y], "o", color=color, ms=6)
        ax.axvline(1.0, color="black", lw=1, ls="--")
        ax.set_title(f"{NAMES.get(m, m)}: B/A", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([short_label(x) for x in labels], fontsize=8)
    axes[0][0].invert_yaxis()  # shared y: first config on top in every panel
    fig.suptitle(f"B = {name_b}  vs  A = {name_a}\nratio of geometric means, 95 % CI; green: B better, "
                 "red: B worse (interval excludes 1), grey: within the noise",
                 fontsize=10)
    return _save(fig, path)


SLO_STRETCH = 1.3  # an SLO line up to this far above the data's top widens the axis to show it; higher: noted


def serving_vs_rate(frame: pd.DataFrame, path: Path, slo_ttft_s: float | None, slo_tpot_s: float | None,
                    target: float = 0.9) -> Path | str:
    """Serving sweeps against achieved request rate, one line per series (a config without its request
    rate): J/request (only where energy was measured), TTFT p90, TPOT p90 (vLLM's; the SLO's "mean ITL"),
    ITL p90 (gaps between streamed chunks) and the fraction within the SLO. Panels without data are left
    out (the figure says which). Axes are scaled to the data: an SLO far above it is written in the panel
    instead of drawn (a line at 1 s would flatten latencies of a few ms onto the axis)."""
    rate = "serving.achieved_rate_s.mean"
    if frame.empty or rate not in frame or not frame[rate].notna().any():
        return "no completed serving job (scenario=serving) in these results"
    slo_set = _finite(slo_ttft_s) or _finite(slo_tpot_s)
    candidates = [("serving.energy.j_per_request", "J / request", 1.0, None, "energy not measured"),
                  ("serving.latency.ttft_s.p90", "TTFT p90 (ms)", 1000.0, slo_ttft_s, "no TTFT"),
                  ("serving.latency.tpot_s.p90", "TPOT p90 (ms)", 1000.0, slo_tpot_s, "no TPOT (results before TPOT)"),
                  ("serving.latency.itl_s.p90", "ITL p90 (ms): gaps between streamed chunks", 1000.0, None, "no ITL"),
                  ("serving.slo.fraction", "requests within the SLO (%)", 100.0, target,
                   "no SLO set" if not slo_set else "no SLO fraction")]
    panels, missing = [], []
    for metric, title, scale, line, why in candidates:
        col = f"{metric}.mean"
        if col in frame and frame[col].notna().any() and (metric != "serving.slo.fraction" or slo_set):
            panels.append((metric, title, scale, line))
        else:
            missing.append(f"{title.split(' (')[0]}: {why}")
    if not panels:
        return "no serving figure has data in these results"
    ncols = 2 if len(panels) in (2, 4) else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        fig.delaxes(ax)  # no empty boxes
    for ax, (metric, title, scale, line) in zip(axes.flat, panels):
        col = f"{metric}.mean"
        top = 0.0
        for i, (series, part) in enumerate(frame.groupby("series", sort=False)):
            part = part[part[rate].notna() & part[col].notna()].sort_values(rate)
            if part.empty:
                continue
            ci = (part[f"{metric}.ci95"] * scale).fillna(0) if f"{metric}.ci95" in part else 0 * part[col]
            ys = part[col] * scale
            top = max(top, float((ys + ci).max()))
            ax.errorbar(part[rate], ys, yerr=ci, fmt="o-", capsize=3, color=COLORS[i % len(COLORS)],
                        label=short_label(str(series)))
            if "serving.request_rate" in part:  # each point's asked rate (the result's field)
                for x, y, offered in zip(part[rate], ys, part["serving.request_rate"]):
                    ax.annotate(f"{offered:g}" if isinstance(offered, float) else str(offered), (x, y),
                                textcoords="offset points", xytext=(4, 4), fontsize=7, color="dimgray")
        top = top * 1.15 if top > 0 else 1.0
        if metric == "serving.slo.fraction":
            top = 105.0
        if line is not None and _finite(line):
            value = line * scale
            unit = " %" if metric.endswith("fraction") else " ms" if scale == 1000.0 else ""
            name = "target" if metric.endswith("fraction") else "SLO"
            if value <= top * SLO_STRETCH:
                top = max(top, value * 1.08)
                ax.axhline(value, ls="--", color="red", lw=1.2, label=f"{name} {fixed_text(value)}{unit}")
            else:
                ax.text(0.98, 0.97, f"{name} {fixed_text(value)}{unit}: above this range", ha="right", va="top",
                        transform=ax.transAxes, fontsize=8, color="red")
        ax.set_ylim(0, top)
        ax.set_xlabel("achieved request rate (req/s)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
    title = "Serving: energy and latency against load (points labelled with the offered rate, req/s)"
    if missing:
        title += "\nnot drawn: " + "; ".join(missing)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def fixed_text(x: float) -> str:
    return f"{x:.4g}"
