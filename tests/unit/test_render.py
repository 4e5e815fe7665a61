"""llem.render: the summary printed after a job, on a hand-made result with known numbers (units,
which statistic, which block a serving job reads, the failed-job line)."""

from __future__ import annotations

import copy
from typing import Any

from llem.render import render


def _stats(p50_s: float, n: int = 4) -> dict[str, Any]:
    return {"n": n, "p50": p50_s, "p90": p50_s * 2}


RESULT: dict[str, Any] = {
    "status": "completed",
    "identity": {"backend": "pytorch", "model": "tiny-gpt2", "precision": "fp32", "config_hash": "ab" * 8},
    "workload": {"prompts": 4, "input_tokens": 32, "output_tokens": 16, "batch_size": 2, "batching": "static"},
    "throughput": {"output_tok_s": 123.456, "requests_s": 3.2109},
    "timing": {"window_s": 0.12345, "load_s": 1.5},
    "latency": {"ttft_s": _stats(0.0123), "itl_request_mean_s": _stats(0.002), "itl_step_s": _stats(0.0015),
                "e2e_s": _stats(0.05)},
    "energy": {"measured": True, "basis": "gpu", "meters": ["nvml"], "energy_j": 12.3456,
               "j_per_output_token": 0.771600, "mean_power_w": 100.04, "adjusted": {"energy_j": 2.5}},
}


def test_a_completed_job_in_its_units() -> None:
    text = render(RESULT, "/out")
    assert text.splitlines() == [
        f"llem pytorch · tiny-gpt2 · fp32 · batch 2 · config {'ab' * 8}",
        "  tokens     4 prompts, 32 in / 16 out",
        "  throughput 123.5 output tok/s, 3.21 req/s (window 0.123 s, load 1.50 s)",
        "  latency    TTFT p50 12.3 ms, TPOT p50 2.0 ms, ITL p50 1.5 ms, e2e p50 50.0 ms",
        "  energy     12.35 J (gpu), 0.7716 J/token, mean 100.0 W; minus idle baseline 2.50 J",
        "  result     /out/result.json",
    ]


def test_batching_names_the_knob_and_an_estimate_names_its_meters() -> None:
    r = copy.deepcopy(RESULT)
    r["workload"]["batching"] = "continuous"
    r["energy"].update(estimate=True, meters=["rapl", "codecarbon"], adjusted=None)
    text = render(r, "/out")
    assert "max_num_seqs 2" in text
    assert "12.35 J (gpu, ESTIMATE by rapl/codecarbon)" in text and "minus idle" not in text
    r["workload"]["batch_size"] = None
    r["workload"]["batching"] = None
    assert "· server batching ·" in render(r, "/out")
    r["energy"]["adjusted"] = {"energy_j": 0.0}  # all of it idle: still shown
    assert "; minus idle baseline 0.00 J" in render(r, "/out")


def test_missing_statistics_read_na_and_no_itl_line_without_gaps() -> None:
    r = copy.deepcopy(RESULT)
    r["latency"] = {"ttft_s": {"n": 0, "p50": None}, "itl_step_s": {"n": 0, "p50": None}, "e2e_s": None}
    r["energy"] = {"measured": False, "reason": "no meter on this host"}
    text = render(r, "/out")
    assert "  latency    TTFT p50 n/a, TPOT p50 n/a, e2e p50 n/a" in text
    assert "  energy     not measured (no meter on this host)" in text


def test_a_serving_job_reads_its_own_latency_block_and_slo() -> None:
    r = copy.deepcopy(RESULT)
    r["serving"] = {
        "request_rate": 2.5, "request_rate_inf": False, "achieved_rate_s": 2.4,
        "latency": {"ttft_s": _stats(0.2), "tpot_s": _stats(0.01), "itl_s": _stats(0.011), "e2e_s": _stats(0.4)},
        "slo": {"ttft_s": 0.5, "tpot_s": None, "e2el_s": 1.0, "met": 9, "goodput_rate_s": 2.25},
        "requests": {"sent": 10, "failed": 1, "failed_by_reason": {"timeout": 1}},
        "energy": {"j_per_request": 1.23456},
    }
    text = render(r, "/out")
    assert "TTFT p50 200.0 ms, TPOT p50 10.0 ms, ITL p50 11.0 ms, e2e p50 400.0 ms" in text
    assert ("  serving    2.5 req/s offered, 2.40 achieved; 9/10 within the SLO (TTFT <= 0.5 s, e2e <= 1 s), "
            "goodput 2.25 req/s; 1.235 J/request; 1 of 10 failed (timeout 1)") in text
    r["serving"]["request_rate_inf"] = True
    r["serving"]["slo"] = {"met": None, "goodput_rate_s": None}
    assert "inf req/s offered, 2.40 achieved; no SLO set" in render(r, "/out")


def test_a_failed_job_is_one_line_with_the_error_and_the_folder() -> None:
    r = {"status": "failed", "error": {"type": "OutOfMemory", "message": "CUDA out of memory"}}
    assert render(r, "/out") == "llem: job failed: OutOfMemory: CUDA out of memory\n  result: /out"
