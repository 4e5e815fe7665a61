"""The study view of serving results: serving.csv columns (sent/succeeded/failed, plain URLs), the
end-of-study request counts, the SLO answer's thresholds, and serving_vs_rate's panels (no empty ones,
axes scaled to the data, an out-of-range SLO written instead of drawn). Result trees come from
llem.results.example with a `serving` block as llem.serving.metrics writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llem.results import load
from llem.results.example import write_example_job
from llem.results.study_summary import request_counts, serving_frame, slo_answer

URL = r"openai.base_url=http\://127.0.0.1\:8000/v1"  # as Hydra's sweeper writes the override


def _serving(rate: float, failed: int, ttft_s: float, energy: bool) -> dict[str, Any]:
    sent = 100

    def stat(v: float) -> dict[str, float]:
        return {"n": sent - failed, "mean": v, "p50": v, "p90": v * 1.2, "p99": v * 1.5}

    return {"request_rate": rate, "achieved_rate_s": rate * 0.95,
            "requests": {"planned": sent, "sent": sent, "succeeded": sent - failed, "failed": failed,
                         "failed_by_reason": {"truncated": failed} if failed else {}},
            "latency": {"ttft_s": stat(ttft_s), "tpot_s": stat(0.004), "itl_s": stat(0.008), "e2e_s": stat(0.2)},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.005, "e2el_s": None, "fraction": 0.95 - failed / 100,
                    "goodput_rate_s": rate * 0.9},
            "throughput": {"output_tok_s": rate * 16},
            "energy": {"j_per_request": 2.0 * rate, "j_per_output_token": 0.1} if energy else {}}


def _study(root: Path, energy: bool) -> Path:
    for i, (rate, failed, ttft) in enumerate([(5.0, 0, 0.004), (10.0, 2, 0.006), (20.0, 25, 0.009)]):
        d = root / str(i)
        write_example_job(d, overrides=[f"scenario.request_rate={rate:g}", URL], job_index=i,
                          config_hash=f"{i + 1:016x}")
        res = json.loads((d / "result.json").read_text())
        res["serving"] = _serving(rate, failed, ttft, energy)
        res["workload"]["scenario"] = "serving"
        (d / "result.json").write_text(json.dumps(res))
    return root


def test_serving_csv_counts_requests_and_keeps_urls_plain(tmp_path: Path) -> None:
    frame = serving_frame(load(_study(tmp_path, energy=False)))
    assert list(frame["serving.requests.failed.mean"]) == [0, 2, 25]
    assert list(frame["serving.requests.sent.mean"]) == [100] * 3
    assert set(frame["slo.tpot_s"]) == {0.005} and set(frame["slo.ttft_s"]) == {1.0}
    assert "serving.latency.tpot_s.p90.mean" in frame
    assert set(frame["override.openai.base_url"]) == {"http://127.0.0.1:8000/v1"}  # not http\://...
    jobs = load(tmp_path)
    assert request_counts(jobs) == "serving requests: 300 sent, 273 succeeded, 27 failed (truncated 27)"
    answer = slo_answer(frame)
    assert answer[0].endswith("(TTFT <= 1000 ms, mean ITL <= 5 ms):")
    assert "energy not measured" in answer[1]


def test_serving_plot_leaves_out_unmeasured_panels_and_notes_a_far_slo(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.report import plots

    frame = serving_frame(load(_study(tmp_path / "s", energy=False)))
    drawn: dict[str, Any] = {}
    real = plots._save

    def spy(fig: Any, path: Path) -> Path:
        axes = fig.get_axes()
        drawn["titles"] = [ax.get_ylabel() for ax in axes]
        drawn["ylim"] = {ax.get_ylabel(): ax.get_ylim() for ax in axes}
        drawn["texts"] = [t.get_text() for ax in axes for t in ax.texts]
        drawn["lines"] = {ax.get_ylabel(): [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
                          for ax in axes}
        drawn["suptitle"] = fig._suptitle.get_text()
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    out = plots.serving_vs_rate(frame, tmp_path / "serving_vs_rate.png", 1.0, 0.005)
    assert isinstance(out, Path) and out.stat().st_size > 10_000
    assert not any(t.startswith("J / request") for t in drawn["titles"])  # energy not measured: no empty box
    assert "J / request: energy not measured" in drawn["suptitle"]
    ttft = next(t for t in drawn["titles"] if t.startswith("TTFT"))
    assert drawn["ylim"][ttft][1] < 20  # scaled to the data (<= 13.5 ms), not stretched to the 1 s SLO
    assert "SLO 1000 ms: above this range" in drawn["texts"] and drawn["lines"][ttft] == []
    tpot = next(t for t in drawn["titles"] if t.startswith("TPOT"))
    assert drawn["lines"][tpot] == [pytest.approx(5.0)]  # 5 ms SLO near the 4.8 ms data: drawn

    with_energy = serving_frame(load(_study(tmp_path / "e", energy=True)))
    monkeypatch.setattr(plots, "_save", spy)
    plots.serving_vs_rate(with_energy, tmp_path / "e.png", 1.0, 0.005)
    assert any(t.startswith("J / request") for t in drawn["titles"]) and len(drawn["titles"]) == 5
