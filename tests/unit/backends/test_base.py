"""RunOutput's typed fields (llem/backends/base.py, SteadyState in llem/measure/latency.py) and the result
blocks built from them: throughput.steady_state, workload.engine, serving.schedule and serving.backend_info.
(Named test_base_output.py, not test_base.py: tests/unit/energy/test_base.py has that basename.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llem.backends.base import EngineInfo, RunOutput, ServingInfo
from llem.energy.base import DeviceEnergy, EnergyReading, Sampling
from llem.energy.block import energy_block
from llem.measure.latency import RequestRecord, SteadyState
from llem.serving.metrics import serving_block


def test_steady_state_throughput_block() -> None:
    ss = SteadyState(t_start=2.0, t_end=6.0, output_tokens=800, requests=9, batch_size=8, method="m")
    assert ss.throughput() == {"output_tok_s": 200.0, "output_tokens": 800, "requests": 9, "duration_s": 4.0,
                               "batch_size": 8}


def test_steady_state_span_is_priced_on_its_own_edges() -> None:
    rows = [{"t_s": t, "device": "gpu:0", "kind": "gpu", "energy_j": e}
            for t, e in ((0.0, 0.0), (2.0, 200.0), (6.0, 1800.0), (8.0, 2000.0))]  # 400 W from 2 to 6 s
    r = EnergyReading("nvml", True, 8.0, [DeviceEnergy("gpu:0", "gpu", 2000.0, "nvml_counter")],
                      timeseries=rows, sampling=Sampling(0.5, 4, 0.0, 8.0))
    b = energy_block([r], [], 8.0, 1000, 10, steady_state=SteadyState(2.0, 6.0, output_tokens=800, requests=9))
    ss = b["steady_state"]
    assert ss["gpu_j"] == pytest.approx(1600.0) and ss["j_per_output_token"] == pytest.approx(2.0)
    assert ss["requests"] == 9 and ss["mean_power_w"] == pytest.approx(400.0)


def test_engine_info_is_the_workload_engine_block_in_field_order() -> None:
    info = EngineInfo(vllm_version="0.x", device="cpu", max_num_seqs=4, finish_reasons={"length": 3})
    d = info.as_dict()
    assert list(d)[:3] == ["vllm_version", "device", "max_num_seqs"] and d["finish_reasons"] == {"length": 3}
    assert d["prefix_cache_hit_tokens"] == 0 and d["env"] == {}


def test_serving_info_schedule_block() -> None:
    info = ServingInfo({"source": "trace", "seed": 1}, offered_rate_s=4.0, requests=3)
    assert info.schedule_block() == {"source": "trace", "seed": 1, "offered_rate_s": 4.0, "requests": 3}
    info.output_lengths_matched, info.input_lengths_matched = 0, 2  # 0 is a count, still written
    assert info.schedule_block()["output_lengths_matched"] == 0 and info.schedule_block()["input_lengths_matched"] == 2


def test_serving_block_reports_the_schedule_offered_rate_and_backend_facts() -> None:
    recs = [RequestRecord(i, 8, 2, 0.5 * i, 0.5 * i + 0.1, 0.5 * i + 0.3, None, token_times=[0.5 * i + 0.1, 0.5 * i + 0.3],
                          t_due=0.5 * i) for i in range(3)]
    scen = SimpleNamespace(request_rate=2.0, burstiness=1.0, max_concurrency=None, warmup_requests=0,
                           slo=SimpleNamespace(ttft_s=None, tpot_s=None, e2el_s=None))
    info = ServingInfo({"source": "arrivals"}, offered_rate_s=1.5, requests=3, backend={"server": "fake"})
    block, _ = serving_block(recs, 0.0, 2.0, scen, info=info)
    assert block["schedule"] == {"source": "arrivals", "offered_rate_s": 1.5, "requests": 3}
    assert block["offered_rate_s"] == 1.5  # the schedule's, not the asked rate (2.0)
    assert block["backend_info"] == {"server": "fake"}
    none, _ = serving_block(recs, 0.0, 2.0, scen)
    assert none["schedule"] is None and none["offered_rate_s"] == 2.0 and none["backend_info"] == {}


def test_run_output_has_no_side_channel() -> None:
    out = RunOutput(records=[], latency_note="n")
    with pytest.raises(AttributeError):
        out.extra  # noqa: B018
    with pytest.raises(TypeError):
        RunOutput(records=[], extra={"steady_state": None})
    assert out.steady_state is None and out.engine is None and out.serving is None
