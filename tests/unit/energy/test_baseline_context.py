"""Idle power as the job sees it: measured before any CUDA context exists and again with the job's
context loaded and idle; adjusted energy subtracts the latter (a GPU holding a context idles higher).

The GPU is the simulator's (tests/fakes/gpu_sim.py, real pynvml names) with 20 ms counter ticks; a context is
simulated by raising the GPU's idle power when the model loads, as a real H100 does (~70 W → ~95 W).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import pytest
from gpu_sim import host

from llem.config.schema import EnergyConfig
from llem.energy.base import DeviceEnergy, EnergyReading, Meter
from llem.energy.baseline import CONTEXT_IDLE_MAX_S, Baseline, baseline_for, context_baseline
from llem.energy.block import energy_block
from llem.energy.meters.nvml.meter import NvmlMeter

IDLE_W, CONTEXT_W, BUSY_W = 70.0, 95.0, 295.0


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    nv = host("H100", 1, watts=IDLE_W, counter_period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return nv


def test_adjusted_energy_subtracts_the_idle_power_with_the_jobs_context(sim, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_CACHE", str(tmp_path))
    cfg = EnergyConfig(baseline_s=0.6, baseline_ttl_s=0.0)
    meter = NvmlMeter(sample_hz=50)
    meter.probe()
    try:
        base = baseline_for([meter], cfg)  # before load: no context
        sim.set_power(0, CONTEXT_W)  # the model is loaded: the job's context holds the GPU's clocks up
        base = context_baseline([meter], cfg, base)
        sim.set_power(0, BUSY_W)  # the window: the workload adds 200 W above the context's idle
        meter.start()
        t0 = time.perf_counter()
        threading.Event().wait(0.6)
        window_s = time.perf_counter() - t0
        reading = meter.stop()
    finally:
        meter.close()
    dev = base.as_dict()["devices"]["gpu:0"]
    assert dev["idle_w_no_context"] == pytest.approx(IDLE_W, rel=0.08)
    assert dev["idle_w_with_context"] == pytest.approx(CONTEXT_W, rel=0.08)
    assert dev["power_w"] == dev["idle_w_with_context"] and dev["power_basis"] == "with_context"
    assert dev["context_duration_s"] == pytest.approx(0.6)
    block = energy_block([reading], [], window_s, output_tokens=10, requests=1, baseline=base)  # typed in, JSON out
    assert block["adjusted"]["gpu_j"] == pytest.approx((BUSY_W - CONTEXT_W) * window_s, rel=0.08)
    assert block["adjusted"]["baseline_power_w"]["gpu"] == pytest.approx(CONTEXT_W, rel=0.08)
    assert block["baseline"]["devices"]["gpu:0"]["idle_w_no_context"] == pytest.approx(IDLE_W, rel=0.08)


class FixedMeter(Meter):
    """A meter whose idle windows report set powers (no waiting): context_baseline's bookkeeping."""

    name = "nvml"

    def __init__(self, watts: dict[str, float], kind: str = "gpu", fail: bool = False) -> None:
        self.watts, self.kind, self.fail, self.windows, self.seconds = watts, kind, fail, 0, 0.0

    def start(self) -> None:
        self.windows += 1
        if self.fail:
            raise RuntimeError("GPU is lost")

    def stop(self) -> EnergyReading:
        return EnergyReading(self.name, True, self.seconds,
                             [DeviceEnergy(d, self.kind, w * self.seconds, "fixed") for d, w in self.watts.items()])

    def wait(self, s: float) -> None:
        self.seconds = s


def _pre(watts: dict[str, float], kind: str = "gpu") -> Baseline:
    return Baseline.from_dict({"devices": {d: {"power_w": w, "kind": kind, "meter": "nvml"} for d, w in watts.items()}, "notes": []})


def test_context_idle_is_short_off_with_baseline_zero_and_only_for_gpus() -> None:
    m = FixedMeter({"gpu:0": 90.0, "gpu:1": 80.0})
    got = context_baseline([m], EnergyConfig(baseline_s=30.0), _pre({"gpu:0": 60.0, "gpu:1": 55.0}), wait=m.wait)
    assert m.seconds == CONTEXT_IDLE_MAX_S  # min(baseline_s, a few seconds)
    assert {k: v for k, v in got.as_dict()["devices"]["gpu:1"].items() if v is not None} == {"power_w": 80.0, "kind": "gpu", "meter": "nvml", "idle_w_no_context": 55.0,
                                            "idle_w_with_context": 80.0, "power_basis": "with_context",
                                            "context_duration_s": CONTEXT_IDLE_MAX_S}
    short = FixedMeter({"gpu:0": 90.0})
    context_baseline([short], EnergyConfig(baseline_s=2.0), _pre({"gpu:0": 60.0}), wait=short.wait)
    assert short.seconds == 2.0
    off = FixedMeter({"gpu:0": 90.0})
    assert context_baseline([off], EnergyConfig(baseline_s=0.0), None, wait=off.wait) is None
    assert off.windows == 0
    cpu = FixedMeter({"cpu:package-0": 30.0}, kind="cpu")
    pre = _pre({"cpu:package-0": 20.0}, kind="cpu")
    assert context_baseline([cpu], EnergyConfig(baseline_s=5.0), pre, wait=cpu.wait).devices == _pre(
        {"cpu:package-0": 20.0}, kind="cpu").devices
    assert cpu.windows == 0  # RAPL: no context to see


def test_a_failed_context_measurement_keeps_the_preload_baseline_and_says_so() -> None:
    m = FixedMeter({"gpu:0": 90.0}, fail=True)
    got = context_baseline([m], EnergyConfig(baseline_s=5.0), _pre({"gpu:0": 60.0}), wait=m.wait).as_dict()
    dev = got["devices"]["gpu:0"]
    assert dev["power_w"] == 60.0 and dev["idle_w_with_context"] is None and dev["power_basis"] == "no_context"
    assert "idle with context failed" in got["notes"][0] and "GPU is lost" in got["notes"][0]


@pytest.mark.slow
def test_run_job_records_both_idle_powers(sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          llem_cache: Path) -> None:
    """The whole job on the tiny model (CPU) with the simulated GPU metered: the context idle is taken
    after load and before warmup, and the result's adjusted energy uses it."""
    from llem.backends.pytorch.backend import PytorchBackend
    from llem.config.schema import DatasetConfig, ExperimentConfig, ModelConfig, PytorchConfig
    from llem.job import run_job

    real_load = PytorchBackend.load

    def load_with_context(self: PytorchBackend) -> None:
        real_load(self)
        sim.set_power(0, CONTEXT_W)

    monkeypatch.setattr(PytorchBackend, "load", load_with_context)
    cfg = ExperimentConfig(model=ModelConfig(cache_dir=str(llem_cache)),
                           pytorch=dataclasses.replace(PytorchConfig(), device="cpu", max_output_tokens=4),
                           energy=EnergyConfig(meter="nvml", baseline_s=0.4, baseline_ttl_s=0.0, sample_hz=20),
                           dataset=DatasetConfig(name="synthetic", input_tokens=8), n=2)
    monkeypatch.setenv("LLEM_CACHE", str(llem_cache))
    result = run_job(cfg, tmp_path / "job", {}, [], "0" * 16)
    dev = result.energy["baseline"]["devices"]["gpu:0"]
    assert dev["idle_w_no_context"] == pytest.approx(IDLE_W, rel=0.1)
    assert dev["idle_w_with_context"] == pytest.approx(CONTEXT_W, rel=0.1)
    assert result.energy["adjusted"]["baseline_power_w"]["gpu"] == dev["idle_w_with_context"]
