"""The report's GPU-settings section: for a study sweeping `gpu.power_limit_w` or `gpu.sm_clock_mhz`, J/output
token and throughput (and, for serving, TTFT / TPOT p90) against the setting, and the answer "lowest J/token
within the SLO" naming the setting. Called from `llem.report.build_report` with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llem.io import read_json
from llem.results import J_PER_TOKEN, THROUGHPUT

AXES = (("power_limit_w", "GPU power limit (W)"), ("sm_clock_mhz", "locked SM clock (MHz, upper bound)"))
TTFT_P90, TPOT_P90 = "latency.ttft_s.p90", "latency.itl_request_mean_s.p90"  # TPOT: vLLM's per-request mean ITL


def _setting(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        return float(value[-1]) if value else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def settings_frame(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per completed job: its GPU settings (from result.json: what was requested and enforced), J/token,
    throughput, p90 latencies, and (serving) the SLO the result's serving.slo names. Not the config's
    scenario.slo: its itl_s is a removed knob (null), and a threshold is what the job measured against."""
    rows = []
    for _, job in jobs[jobs["status"] == "completed"].iterrows():
        try:
            res = read_json(Path(str(job["job_dir"])) / "result.json")
        except (OSError, ValueError):
            continue
        gpu = (res.get("config") or {}).get("gpu") or {}
        devices = (res.get("gpu_settings") or {}).get("devices") or []
        enforced = [d.get("enforced", {}).get("power_limit_w") for d in devices]
        serving = res.get("serving") or {}  # an Empty block ({}) offline
        slo = serving.get("slo") or {}
        tpot = slo.get("tpot_s") if slo.get("tpot_s") is not None else slo.get("itl_s")  # itl_s: results before TPOT
        rows.append({"power_limit_w": _setting(gpu.get("power_limit_w")),
                     "sm_clock_mhz": _setting(gpu.get("sm_clock_mhz")),
                     "enforced_power_limit_w": enforced[0] if enforced else None,
                     "j_per_token": job.get(J_PER_TOKEN), "output_tok_s": job.get(THROUGHPUT),
                     "ttft_p90_s": job.get(TTFT_P90), "tpot_p90_s": job.get(TPOT_P90),
                     "serving": bool(serving), "slo_ttft_s": slo.get("ttft_s"), "slo_tpot_s": tpot})
    return pd.DataFrame(rows)


def best_within_slo(per: pd.DataFrame, key: str) -> str:
    """'lowest J/token within the SLO: gpu.<key>=<v> (...)' from the per-setting means."""
    ok = per[per["j_per_token"].notna()]
    if ok.empty:
        return "no energy measured: no J/token answer"
    serving = bool(ok["serving"].any())
    if serving:
        within = ok[(ok["ttft_p90_s"] <= ok["slo_ttft_s"]) & (ok["tpot_p90_s"] <= ok["slo_tpot_s"])]
        if within.empty:
            return "lowest J/token within the SLO: none (no setting keeps TTFT p90 and TPOT p90 within the SLO)"
        ok = within
    best = ok.loc[ok["j_per_token"].idxmin()]
    what = "within the SLO (TTFT p90 and TPOT p90)" if serving else "(offline: no SLO)"
    return (f"lowest J/token {what}: gpu.{key}={best[key]:g} ({best['j_per_token']:.4g} J/output token, "
            f"{best['output_tok_s']:.4g} output tok/s)")


def figures(jobs: pd.DataFrame, out_dir: Path) -> list[tuple[str, str, Path | str]]:
    """The section's figures for the report page: [] when the study sweeps no GPU setting."""
    frame = settings_frame(jobs)
    for key, label in AXES:
        if frame.empty or frame[key].nunique() < 2:
            continue
        per = frame.groupby(key, as_index=False).agg(
            j_per_token=("j_per_token", "mean"), output_tok_s=("output_tok_s", "mean"),
            ttft_p90_s=("ttft_p90_s", "mean"), tpot_p90_s=("tpot_p90_s", "mean"), serving=("serving", "max"),
            slo_ttft_s=("slo_ttft_s", "first"), slo_tpot_s=("slo_tpot_s", "first")).sort_values(key)
        answer = best_within_slo(per, key)
        path = _plot(per, key, label, out_dir / f"gpu_{key}.png", answer)
        return [(f"Energy and throughput vs {label} — {answer}", f"gpu_{key}", path)]
    return []


def _plot(per: pd.DataFrame, key: str, label: str, path: Path, answer: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llem.report.plots import _save

    serving = bool(per["serving"].any())
    fig, axes = plt.subplots(1, 2 if serving else 1, figsize=(11 if serving else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    ax.plot(per[key], per["j_per_token"], "o-", color="tab:red", label="J/output token")
    ax.set_xlabel(label)
    ax.set_ylabel("J/output token", color="tab:red")
    ax2 = ax.twinx()
    ax2.plot(per[key], per["output_tok_s"], "s--", color="tab:blue", label="output tok/s")
    ax2.set_ylabel("output tok/s", color="tab:blue")
    ax.set_title(answer if len(answer) < 70 else answer[:67] + "...", fontsize=9)
    if serving:
        bx = axes[0][1]
        bx.plot(per[key], per["ttft_p90_s"] * 1000, "o-", label="TTFT p90")
        bx.plot(per[key], per["tpot_p90_s"] * 1000, "s-", label="TPOT p90")
        slo = per[["slo_ttft_s", "slo_tpot_s"]].dropna()
        if len(slo):
            bx.axhline(float(slo.iloc[0, 0]) * 1000, ls=":", color="tab:blue", label="SLO TTFT")
            bx.axhline(float(slo.iloc[0, 1]) * 1000, ls=":", color="tab:orange", label="SLO TPOT")
        bx.set_xlabel(label)
        bx.set_ylabel("ms")
        bx.legend(fontsize=8)
    return _save(fig, path)
