"""Result.typed() round-trips (property test): results assembled by the real producers (energy block from
every meter's typed reading, serving block, vLLM's steady state and engine facts, failed jobs) validate
against the schema and read back through the typed ResultDoc to the same JSON, keys in the same order.
(Every result.json the other tests write is checked the same way by tests/conftest.py.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from llem.backends.base import EngineInfo, ServingInfo
from llem.energy import base as eb
from llem.energy.block import energy_block
from llem.measure.latency import RequestRecord, SteadyState, latency_block
from llem.result import Result, flops_block
from llem.result_schema import validate_result
from llem.result_schema.convert import to_json
from llem.serving.metrics import serving_block

WINDOW = (10.0, 14.0)


def _reading(meter: str, energy_j: float, samples: int) -> eb.EnergyReading:
    t0, t1 = WINDOW
    rows = [{"t_s": t0 + i * (t1 - t0) / 4, "elapsed_s": i * (t1 - t0) / 4, "meter": meter, "device": "d",
             "kind": "gpu", "power_w": energy_j / (t1 - t0), "energy_j": energy_j * i / 4} for i in range(5)]
    if meter == "nvml":
        return eb.EnergyReading(
            "nvml", True, t1 - t0, [eb.DeviceEnergy("gpu:0", "gpu", energy_j, "nvml_counter", {"uuid": "GPU-0",
                                                                                            "thermal": None})],
            timeseries=[{**r, "device": "gpu:0"} for r in rows], update_period_s=0.1,
            sampling=eb.CounterSampling(10.0, samples, t0, t1, counter_step_s=0.1),
            attribution=eb.Attribution("nvml_processes", "listed", {"gpu:0": {"pids": [1], "job_pids": [1]}}, True),
            unattributed_devices=[eb.UnattributedDevice("gpu:1", "gpu", 1.0, "GPU-1", "H100", "nvml_counter", 0.25, "idle")],
            curves={"gpu:0": eb.EnergyCurve([t0, t1], [0.0, energy_j])})
    if meter == "rapl":
        return eb.EnergyReading("rapl", True, t1 - t0, [eb.DeviceEnergy("cpu:package-0", "cpu", energy_j, "rapl_counter")],
                             update_period_s=0.001, sampling=eb.Sampling(100.0, samples, t0, t1),
                             details={"root": "/sys/class/powercap", "frozen_zones": []})
    if meter == "node":
        return eb.EnergyReading("node", True, t1 - t0, [eb.DeviceEnergy("node", "node", energy_j, "redfish_power_integral",
                                                                  {"source": "redfish", "duration_s": t1 - t0})],
                             update_period_s=0.5, sampling=eb.Sampling(2.0, samples, t0, t1),
                             details={"source": "redfish", "address": "https://bmc", "sample_s": 0.5})
    if meter == "zeus":
        return eb.EnergyReading("zeus", True, t1 - t0, [eb.DeviceEnergy("gpu:0", "gpu", energy_j, "zeus")], update_period_s=0.1)
    if meter == "codecarbon":
        return eb.EnergyReading("codecarbon", True, t1 - t0, [eb.DeviceEnergy("cpu:codecarbon", "cpu", energy_j,
                                                                        "codecarbon_estimate", estimate=True)],
                             details={"estimate": True, "emissions_kg_co2eq": None})
    return eb.EnergyReading("none", False, t1 - t0, reason="energy measurement disabled")


def _records(n: int) -> list[RequestRecord]:
    t0 = WINDOW[0]
    return [RequestRecord(i, 16, 4, t0 + 0.3 * i, t0 + 0.3 * i + 0.1, t0 + 0.3 * i + 0.4, None,
                          token_times=[t0 + 0.3 * i + 0.1 * k for k in range(1, 5)], t_due=t0 + 0.3 * i)
            for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(meters=st.lists(st.sampled_from(["nvml", "rapl", "node", "zeus", "codecarbon", "none"]), min_size=1,
                       max_size=3, unique=True),
       energy_j=st.floats(min_value=0.5, max_value=5e4), samples=st.integers(min_value=1, max_value=200),
       serving=st.booleans(), steady=st.booleans(), status=st.sampled_from(["completed", "failed"]),
       n=st.integers(min_value=1, max_value=6))
def test_results_from_the_producers_round_trip(meters: list[str], energy_j: float, samples: int, serving: bool,
                                               steady: bool, status: str, n: int) -> None:
    r = Result(llem_version="0.0", config={"backend": "vllm"},
               identity={"config_hash": "h", "cycle": 0, "overrides": [], "backend": "vllm"})
    if status == "completed":
        records = _records(n)
        n_out = sum(x.output_tokens for x in records)
        n_in = sum(x.input_tokens for x in records)
        window_s = WINDOW[1] - WINDOW[0]
        ss = SteadyState(WINDOW[0] + 0.5, WINDOW[1] - 0.5, output_tokens=n_out // 2, requests=n // 2, batch_size=4,
                         method="m") if steady else None
        r.workload = {"prompts": n, "batch_size": 4, "batching": "continuous", "scenario": "offline",
                      "input_tokens": n_in, "output_tokens": n_out, "dataset": "synthetic",
                      "engine": EngineInfo(vllm_version="0.x", device="cpu", max_num_seqs=4).as_dict()}
        r.timing = {"load_s": 1.0, "warmup_s": 0.1, "warmup_batches": 1, "warmup_latencies_s": [0.1],
                    "window_s": window_s, "window_start_unix_s": 1.8e9}
        r.throughput = {"output_tok_s": n_out / window_s, "total_tok_s": (n_in + n_out) / window_s,
                        "requests_s": n / window_s}
        if ss is not None:
            r.throughput["steady_state"] = ss.throughput()
        r.latency = latency_block(records)
        r.flops = flops_block(1000, n_in, n_out)
        readings = [_reading(m, energy_j, samples) for m in meters]
        r.energy = energy_block(readings, ["picked"], window_s, n_out, n, r.flops.get("total_flop"), input_tokens=n_in,
                                window_span=WINDOW, phases=[], steady_state=ss)
        if serving:
            scen = SimpleNamespace(request_rate=2.0, burstiness=1.0, max_concurrency=None, warmup_requests=0,
                                   slo=SimpleNamespace(ttft_s=0.5, tpot_s=0.2, e2el_s=None))
            info = ServingInfo({"source": "arrivals"}, offered_rate_s=2.0, requests=n, backend={"server": "x"})
            r.serving, _ = serving_block(records, *WINDOW, scen, readings, r.energy, info)
        r.status = "completed"
    else:
        r.fail(RuntimeError("boom"))
    doc = json.loads(json.dumps(r.as_dict(), default=str))
    validate_result(doc)
    assert json.dumps(to_json(r.typed()), default=str) == json.dumps(r.as_dict(), default=str)
