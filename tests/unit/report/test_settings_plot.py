"""The GPU-settings section reads each job's SLO from the result's serving.slo, not from the config:
`scenario.slo.itl_s` is a removed knob (null), so reading it left every setting outside the SLO."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from llem.io import atomic_write_json
from llem.measure.latency import RequestRecord
from llem.report.settings_plot import best_within_slo, settings_frame
from llem.results import J_PER_TOKEN, THROUGHPUT
from llem.results.example import example_result
from llem.serving.metrics import serving_block


def _serving_job(folder: Path, limit_w: int, j_per_token: float) -> dict:
    result, _ = example_result(overrides=[f"gpu.power_limit_w={limit_w}"], job_dir=str(folder),
                               j_per_output_token=j_per_token)
    result["config"]["gpu"] = {**(result["config"].get("gpu") or {}), "power_limit_w": limit_w}
    result["config"]["scenario"] = {**result["config"]["scenario"], "name": "serving"}
    recs = [RequestRecord(i, 8, 2, 0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.1, None,
                          token_times=[0.1 * i + 0.05, 0.1 * i + 0.1], t_due=0.1 * i) for i in range(4)]
    slo = SimpleNamespace(ttft_s=0.5, tpot_s=0.07, e2el_s=None)
    scen = SimpleNamespace(request_rate=10.0, burstiness=1.0, max_concurrency=None, warmup_requests=0, slo=slo)
    result["serving"], _ = serving_block(recs, 0.0, 1.0, scen)
    atomic_write_json(folder / "result.json", result)
    return {"status": "completed", "job_dir": str(folder), J_PER_TOKEN: j_per_token, THROUGHPUT: 100.0,
            "latency.ttft_s.p90": 0.1, "latency.itl_request_mean_s.p90": 0.05}


def test_serving_slo_comes_from_the_result(tmp_path: Path) -> None:
    jobs = pd.DataFrame([_serving_job(tmp_path / f"j{w}", w, j) for w, j in ((200, 0.5), (300, 0.4))])
    frame = settings_frame(jobs)
    assert frame["serving"].all()
    assert frame["slo_ttft_s"].tolist() == [0.5, 0.5] and frame["slo_tpot_s"].tolist() == [0.07, 0.07]
    assert frame["power_limit_w"].tolist() == [200.0, 300.0]
    assert best_within_slo(frame, "power_limit_w").startswith(
        "lowest J/token within the SLO (TTFT p90 and TPOT p90): gpu.power_limit_w=300 ")
