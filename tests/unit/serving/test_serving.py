"""Serving scenario, pure parts on known numbers: arrival process, scheduler, SLO/goodput, steady state,
per-request energy attribution, the serving block, scenario validation and the backend registry."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from llem.backends.base import ServingInfo
from llem.config.schema import (
    BACKENDS,
    ExperimentConfig,
    PytorchConfig,
    ScenarioConfig,
    SloConfig,
    VllmConfig,
)
from llem.config.validate import problems
from llem.energy.base import EnergyReading
from llem.measure.latency import RequestRecord
from llem.serving.attribution import Span, attribute, energy_function, running_at
from llem.serving.metrics import is_good, itl_gaps, serving_block, steady_state_span
from llem.serving.schedule import drive, lateness_s
from llem.study.hashing import config_hash

REPO = Path(__file__).resolve().parents[3]


# -- arrival process: tests/unit/serving/test_arrivals.py (equal to vLLM's get_request) ---------------------


# -- scheduler --------------------------------------------------------------------------------------------
def _rec(i: int, submit: float, first: float | None, end: float, out: int = 3, **kw) -> RequestRecord:
    return RequestRecord(index=i, input_tokens=10, output_tokens=out, t_submit=submit, t_first_token=first,
                         t_end=end, **kw)


def test_scheduler_stamps_schedule_honours_max_concurrency_and_records_failures() -> None:
    import time

    async def send(i: int) -> RequestRecord:
        t = time.perf_counter()
        if i == 3:
            raise RuntimeError("server said no")
        await asyncio.sleep(0.02)
        return _rec(i, t, t + 0.01, time.perf_counter())

    async def main() -> list[RequestRecord]:
        t0 = time.perf_counter() + 0.01
        recs = await drive([0.0, 0.0, 0.0, 0.0, 0.0], send, max_concurrency=1, t0=t0)
        return [replace(r, batch=round((r.t_due - t0) * 1e6)) for r in recs]

    recs = asyncio.run(main())
    assert [r.index for r in recs] == [0, 1, 2, 3, 4]
    assert all(r.batch == 0 for r in recs)  # t_due = t0 + offset exactly
    # one slot: each request is sent only after the one before it ended
    ok = [r for r in recs if r.error is None]
    assert all(b.t_submit >= a.t_end for a, b in zip(ok, ok[1:]))
    assert recs[3].error == "RuntimeError: server said no" and recs[3].output_tokens == 0
    late = lateness_s(recs)
    assert len(late) == 5 and all(x >= 0 for x in late) and late[4] > late[0]  # waited for slots


# -- SLO, goodput, steady state (vLLM's --goodput, ML.ENERGY's steady state) -----------------------------
def _slo(ttft=None, tpot=None, e2el=None) -> SimpleNamespace:
    return SimpleNamespace(ttft_s=ttft, tpot_s=tpot, e2el_s=e2el)


def test_goodput_is_every_set_threshold_at_most_its_limit() -> None:
    slo = _slo(0.5, 0.1)
    assert is_good(_rec(0, 0.0, 0.5, 0.7), slo)  # ttft 0.5 (= limit), tpot 0.1 (= limit)
    assert not is_good(_rec(1, 0.0, 0.51, 0.6), slo)  # ttft over
    assert not is_good(_rec(2, 0.0, 0.1, 0.4), slo)  # tpot 0.15 over
    assert is_good(_rec(3, 0.0, 0.2, 0.2, out=1), slo)  # one token: tpot 0 (vLLM)
    assert not is_good(_rec(4, 0.0, 0.1, 0.2, error="boom"), slo)
    assert not is_good(_rec(5, 0.0, 0.1, 0.2, failure="truncated"), slo)
    assert not is_good(_rec(6, 0.0, None, 0.2, out=0), slo)
    assert is_good(_rec(7, 0.0, 0.9, 3.0), _slo(e2el=3.0)) and not is_good(_rec(8, 0.0, 0.1, 3.01), _slo(e2el=3.0))
    assert is_good(_rec(9, 0.0, 0.9, 30.0), _slo(tpot=20.0))  # subset: ttft not used


def test_itl_is_one_gap_per_chunk_and_tpot_per_request() -> None:
    # 2 tokens per chunk every 8 ms (issue 19's server): ITL 8 ms, not 0; TPOT = (e2el - ttft)/(7) tokens.
    chunks = [0.1 + 0.008 * k for k in range(4)]
    r = _rec(0, 0.0, chunks[0], chunks[-1], out=8, chunk_times=chunks, chunk_tokens=[2] * 4,
             token_times=[t for t in chunks for _ in range(2)])
    assert itl_gaps([r]) == pytest.approx([0.008] * 3)
    assert r.tpot_s == pytest.approx(0.024 / 7)
    # a filler with per-token times only: equal instants are one chunk
    r2 = _rec(1, 0.0, 0.1, 0.116, out=6, token_times=[0.1, 0.1, 0.108, 0.108, 0.116, 0.116])
    assert itl_gaps([r2]) == pytest.approx([0.008, 0.008])


def test_steady_state_is_b_first_tokens_to_b_minus_1_left() -> None:
    # running spans (send→end, no scheduling times): B = 2 (never 3 at once).
    recs = [_rec(0, 0.0, 0.5, 2.0), _rec(1, 1.0, 1.5, 3.0), _rec(2, 2.5, 3.2, 4.0), _rec(3, 3.5, 4.0, 6.0),
            _rec(4, 3.0, None, 3.5, out=0, failure="http_5xx")]  # failed: left out, although it overlaps
    assert steady_state_span(recs) == (1.5, 4.0, 2)  # 2nd first token at 1.5; 4th of 4 ends → 1 left at 4.0
    # all at once, B = n: from the last first token to the first end
    assert steady_state_span([_rec(0, 0.0, 0.5, 2.0), _rec(1, 0.0, 0.6, 2.5)]) == (0.6, 2.0, 2)
    # engine scheduling times shrink the running spans: B = 1 → from the first first token to the last end
    seq = [_rec(0, 0.0, 0.5, 1.0, t_scheduled=0.0), _rec(1, 0.0, 1.5, 2.0, t_scheduled=1.0)]
    assert steady_state_span(seq) == (0.5, 2.0, 1)


# -- per-request energy -----------------------------------------------------------------------------------
def test_attribution_splits_each_instant_equally_and_shares_sum_to_busy_energy() -> None:
    # 10 W everywhere, window [0, 10]. A: send 1, first token 2, end 5. B: send 3, first 4, end 7.
    # [1,2] A prefill alone 10 J; [2,3] A decode alone 10 J; [3,4] A decode + B prefill 5 J each;
    # [4,5] both decode 5 J each; [5,7] B decode alone 20 J; idle [0,1] + [7,10] = 40 J.
    att = attribute([Span(0, 1, 2, 5), Span(1, 3, 4, 7)], lambda t: 10.0 * t, 0.0, 10.0)
    a, b = att.shares
    assert (a.prefill_j, a.decode_j) == pytest.approx((10.0, 20.0))
    assert (b.prefill_j, b.decode_j) == pytest.approx((5.0, 25.0))
    assert att.busy_j == pytest.approx(60.0) and att.idle_j == pytest.approx(40.0)
    assert (att.busy_s, att.idle_s) == pytest.approx((6.0, 4.0))
    assert a.energy_j + b.energy_j == pytest.approx(att.busy_j) and att.busy_j + att.idle_j == att.window_j
    assert running_at([Span(0, 1, 2, 5), Span(1, 3, 4, 7)], 4.5) == 2


def test_attribution_follows_the_sampled_power_curve_and_clips_to_the_window() -> None:
    # RAPL-like cumulative series: 10 W until t=4, then 30 W. Window [2, 8].
    times = [0.0, 2.0, 4.0, 6.0, 8.0]
    energy = [0.0, 20.0, 40.0, 100.0, 160.0]
    reading = EnergyReading("rapl", True, timeseries=[
        {"t_s": t, "device": "cpu:package-0", "kind": "cpu", "energy_j": e} for t, e in zip(times, energy)])
    fn, source = energy_function([reading], "cpu", 2.0, 8.0, total_j=140.0)
    assert source == "timeseries" and fn is not None
    # A runs [1, 5] (starts before the window: only [2, 5] counts), first token at 3; failed B [4, 6] no token.
    att = attribute([Span(0, 1.0, 3.0, 5.0), Span(1, 4.0, None, 6.0)], fn, 2.0, 8.0)
    a, b = att.shares
    assert a.prefill_j == pytest.approx(10.0)  # [2,3] at 10 W
    assert a.decode_j == pytest.approx(10.0 + 15.0)  # [3,4] alone at 10 W; [4,5] 30 J shared by two
    assert (b.prefill_j, b.decode_j) == pytest.approx((15.0 + 30.0, 0.0))  # no first token: all prefill
    assert att.idle_j == pytest.approx(60.0) and att.window_j == pytest.approx(140.0)
    assert a.energy_j + b.energy_j == pytest.approx(att.busy_j)


def test_counters_only_fall_back_to_mean_power() -> None:
    fn, source = energy_function([EnergyReading("nvml", True)], "gpu", 0.0, 4.0, total_j=100.0)
    assert source == "mean_power" and fn(3.0) - fn(1.0) == pytest.approx(50.0)
    assert energy_function([], "gpu", 0.0, 4.0, None) == (None, "unmeasured")


def test_serving_block_on_a_known_timeline() -> None:
    scen = SimpleNamespace(request_rate=2.0, burstiness=1.0, max_concurrency=None, warmup_requests=0,
                           slo=_slo(0.5, 0.2))
    recs = [
        _rec(0, 0.0, 0.4, 1.0, out=4, t_due=0.0, token_times=[0.4, 0.6, 0.8, 1.0]),  # meets
        _rec(1, 0.5, 1.5, 2.1, out=4, t_due=0.5, token_times=[1.5, 1.7, 1.9, 2.1]),  # ttft 1.0: misses
        _rec(2, 1.1, 1.3, 1.9, out=4, t_due=1.0, token_times=[1.3, 1.5, 1.7, 1.9]),  # meets, 0.1 s late
        _rec(3, 1.6, 1.65, 1.7, out=2, t_due=1.5, error="EngineDeadError: x", failure="server"),  # partial tokens
    ]
    block, rows = serving_block(recs, 0.0, 4.0, scen, readings=[], energy={"basis": "gpu", "gpu_j": 400.0},
                                info=ServingInfo({"source": "arrivals"}, offered_rate_s=2.0, requests=4))
    assert block["requests"] == {"planned": 4, "sent": 4, "succeeded": 3, "failed": 1,
                                 "failed_by_reason": {"server": 1}, "errors": ["EngineDeadError: x"]}
    assert block["achieved_rate_s"] == pytest.approx(3 / 4) and block["throughput"]["requests_s"] == pytest.approx(3 / 4)
    assert block["offered_rate_s"] == 2.0 and block["send_rate_s"] == pytest.approx(4 / 1.6)
    assert block["throughput"]["output_tok_s"] == pytest.approx(12 / 4)  # failed request's 2 tokens left out
    assert block["output_tokens"] == 12 and block["latency"]["e2e_s"]["n"] == 3
    assert block["slo"]["met"] == 2 and block["slo"]["fraction"] == pytest.approx(0.5)
    assert block["slo"]["goodput_rate_s"] == pytest.approx(2 / 4)
    assert block["latency"]["ttft_s"]["max"] == pytest.approx(1.0)
    assert block["latency"]["itl_s"]["n"] == 9 and block["latency"]["itl_s"]["max"] == pytest.approx(0.2)
    assert block["latency"]["tpot_s"]["mean"] == pytest.approx(0.2)
    assert block["latency"]["lateness_s"]["max"] == pytest.approx(0.1)
    assert block["in_flight"]["peak"] == 3  # at t=1.65 requests 1, 2 and 3 are all in flight
    assert block["in_flight"]["mean"] == pytest.approx((1.0 + 1.6 + 0.8 + 0.1) / 4)
    e = block["energy"]
    assert e["source"] == "mean_power" and e["j_per_output_token"] == pytest.approx(400 / 12)
    assert e["j_per_request"] == pytest.approx(400 / 3) and e["j_per_slo_request"] == pytest.approx(400 / 2)
    att = e["attribution"]
    assert att["span"] == "in_flight" and "IN FLIGHT" in att["rule"]
    assert sum(r.energy_j for r in rows.values()) == pytest.approx(att["busy_j"])
    assert att["busy_j"] + att["idle_j"] == pytest.approx(400.0)
    assert att["idle_j"] == pytest.approx(100.0 * (4.0 - 2.1))  # 100 W, idle after the last end
    assert rows[0].meets_slo and not rows[1].meets_slo and rows[3].failure == "server"
    # [0, 0.5] request 0 alone: 50 J of prefill (its first token is at 0.4: 40 J prefill, 10 J decode)
    assert rows[0].prefill_energy_j == pytest.approx(40.0)
    st = block["steady_state"]  # succeeded: B = 2 (0 and 1 over [0.5, 1.0]); 2nd first token 1.3; 1 left at 1.9
    assert (st["t_start"], st["t_end"], st["running_b"]) == pytest.approx((1.3, 1.9, 2))
    assert st["output_tokens"] == 6 and st["requests"] == 1  # (1.3, 1.9]: 1.5 1.7 1.9 of req 1 and of req 2
    assert st["energy_j"] == pytest.approx(60.0) and st["j_per_output_token"] == pytest.approx(10.0)
    assert rows[0].mlenergy_energy_j == pytest.approx(40.0)  # ML.ENERGY: 10 J/token x 4 tokens


def test_queued_time_takes_no_energy_share_when_scheduling_is_known() -> None:
    # 10 W. A scheduled at 0, runs to 4. B sent at 0 but queued until 2 (first token 3, end 4).
    recs = [_rec(0, 0.0, 1.0, 4.0, out=4, t_due=0.0, t_scheduled=0.0),
            _rec(1, 0.0, 3.0, 4.0, out=2, t_due=0.0, t_scheduled=2.0)]
    scen = SimpleNamespace(request_rate=math.inf, burstiness=1.0, max_concurrency=None, warmup_requests=0,
                           slo=_slo())
    block, rows = serving_block(recs, 0.0, 4.0, scen, energy={"basis": "gpu", "gpu_j": 40.0})
    assert block["energy"]["attribution"]["span"] == "running"
    assert rows[0].energy_j == pytest.approx(20 + 10) and rows[1].energy_j == pytest.approx(10)
    assert rows[1].prefill_energy_j == pytest.approx(5) and rows[1].decode_energy_j == pytest.approx(5)
    assert block["latency"]["queue_s"]["max"] == pytest.approx(2.0) and block["slo"]["met"] is None
    assert block["running"]["peak"] == 2


# -- scenario knobs and the backend registry ------------------------------------------------------------
def _serving(**kw) -> ScenarioConfig:
    return ScenarioConfig(name="serving", **kw)


def test_inf_burstiness_none_slo_and_ramp_up_are_accepted() -> None:
    ok = _serving(burstiness=float("inf"), ramp_up="exponential", ramp_up_start_rps=1.0, ramp_up_end_rps=8.0,
                  slo=SloConfig(ttft_s=None, tpot_s=None, e2el_s=2.0))
    assert [p for p in problems(ExperimentConfig(backend="vllm", vllm=VllmConfig(), scenario=ok))
            if p[0].startswith("scenario")] == []


@pytest.mark.parametrize(("scenario", "key", "allowed"), [
    (_serving(request_rate=0.0), "scenario.request_rate", "inf"),
    (_serving(request_rate=float("nan")), "scenario.request_rate", "> 0"),
    (_serving(burstiness=0.0), "scenario.burstiness", "1 = Poisson"),
    (_serving(max_concurrency=0), "scenario.max_concurrency", ">= 1"),
    (_serving(warmup_requests=-1), "scenario.warmup_requests", ">= 0"),
    (_serving(slo=SloConfig(ttft_s=0.0)), "scenario.slo.ttft_s", "> 0"),
    (_serving(slo=SloConfig(tpot_s=-1.0)), "scenario.slo.tpot_s", "> 0"),
    (_serving(slo=SloConfig(e2el_s=0.0)), "scenario.slo.e2el_s", "> 0"),
    (_serving(slo=SloConfig(itl_s=0.1)), "scenario.slo.itl_s", "renamed scenario.slo.tpot_s"),
    (_serving(burstiness=float("nan")), "scenario.burstiness", "inf = constant"),
    (_serving(ramp_up="sigmoid"), "scenario.ramp_up", "linear, exponential"),
    (_serving(ramp_up="linear", ramp_up_start_rps=1.0), "scenario.ramp_up_end_rps", "finite number"),
    (_serving(ramp_up_start_rps=1.0), "scenario.ramp_up_start_rps", "null unless"),
    (ScenarioConfig(name="online"), "scenario", "offline, serving"),
])
def test_bad_scenario_knobs_are_refused_naming_the_key(scenario: ScenarioConfig, key: str, allowed: str) -> None:
    cfg = ExperimentConfig(backend="vllm", vllm=VllmConfig(), scenario=scenario)
    found = [p for p in problems(cfg) if p[0] == key]
    assert found and allowed in found[0][2]


def test_serving_needs_a_backend_that_serves_and_inf_rate_is_fine() -> None:
    bad = problems(ExperimentConfig(pytorch=PytorchConfig(), scenario=_serving()))
    assert bad == [("scenario", "serving", "offline with backend=pytorch (backends with scenario=serving: vllm"
                    + "".join(f", {n}" for n, b in BACKENDS.items() if n != "vllm" and b.serving_target) + ")")]
    assert problems(ExperimentConfig(backend="vllm", vllm=VllmConfig(), scenario=_serving(request_rate=math.inf))) == []


def test_every_registered_backend_is_complete() -> None:
    """One registry entry per backend: its section is on ExperimentConfig, its YAML exists, its targets import."""
    from llem.config.schema import import_target

    fields = ExperimentConfig.__dataclass_fields__
    for name, spec in BACKENDS.items():
        assert name in fields and fields[name].default is None
        text = (REPO / "conf" / "backend" / f"{name}.yaml").read_text()
        assert "# @package _global_" in text and f"backend: {name}" in text and f"\n{name}:" in text
        assert spec.scenarios(), name
        if spec.checks:
            assert callable(import_target(spec.checks))
        if spec.batch_knob:
            assert spec.batch_knob in spec.config.__dataclass_fields__


def test_scenario_enters_config_hash_only_when_serving() -> None:
    base = {"backend": "vllm", "n": 8, "vllm": {"max_num_seqs": 4}, "pytorch": None}
    offline = {**base, "scenario": {"name": "offline", "request_rate": 1.0}}
    assert config_hash(offline) == config_hash({**offline, "scenario": {"name": "offline", "request_rate": 9.0}})
    assert config_hash(offline) == config_hash(base)  # offline hashes unchanged by the scenario section
    s1 = {**base, "scenario": {"name": "serving", "request_rate": 1.0}}
    s2 = {**base, "scenario": {"name": "serving", "request_rate": 2.0}}
    assert len({config_hash(offline), config_hash(s1), config_hash(s2)}) == 3


def test_serving_path_works_without_vllm_renderers(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM releases before Dec 2025 have no vllm.renderers (pyproject allows >= 0.11): token-id prompts are
    handed to AsyncLLM.generate as they are, instead of failing at prepare()."""
    import sys

    from llem.backends.vllm.serving import VllmServingBackend

    monkeypatch.setitem(sys.modules, "vllm.renderers.inputs.preprocess", None)  # import raises ImportError
    prompts = [{"prompt_token_ids": [1, 2, 3]}]
    backend = VllmServingBackend.__new__(VllmServingBackend)  # no engine start: only its render step
    backend.engine = SimpleNamespace(model_config=None)
    assert backend.render(prompts) is prompts


def test_result_latency_block_counts_one_gap_per_chunk() -> None:
    from llem.measure.latency import latency_block

    chunks = [0.1, 0.108, 0.116]  # 2 tokens per chunk every 8 ms
    r = _rec(0, 0.0, 0.1, 0.116, out=6, chunk_times=chunks, chunk_tokens=[2, 2, 2],
             token_times=[t for t in chunks for _ in range(2)], t_due=0.0)
    steps = latency_block([r])["itl_step_s"]
    assert steps["n"] == 2 and steps["p50"] == pytest.approx(0.008)
