"""Baseline (idle) power: measured before the model loads, cached per device with a TTL, subtracted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from energy_fakes import SimClock, gpu_uuid, host, intel_tree, run_for, sim_meter

from llem.config.schema import EnergyConfig
from llem.energy.base import DeviceEnergy, EnergyReading, Meter
from llem.energy.baseline import Baseline, baseline_for, measure_baselines
from llem.energy.block import energy_block
from llem.energy.meters.rapl.meter import RaplMeter


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FixedPowerMeter(Meter):
    """Reports `watts` per device over however long the (fake) wait lasted."""

    name = "fixed"

    def __init__(self, watts: dict[str, float], ids: dict[str, str] | None = None) -> None:
        self.watts, self.ids, self.windows, self.seconds = watts, ids, 0, 0.0

    def identities(self) -> dict[str, str]:
        return self.ids if self.ids is not None else {d: f"id-{d}" for d in self.watts}

    def start(self) -> None:
        self.windows += 1

    def stop(self) -> EnergyReading:
        return EnergyReading(self.name, True, self.seconds,
                             [DeviceEnergy(d, "gpu", w * self.seconds, "fixed") for d, w in self.watts.items()])

    def wait(self, seconds: float) -> None:
        self.seconds = seconds


def test_measured_once_then_reused_until_the_ttl_expires(tmp_path: Path) -> None:
    meter, clock = FixedPowerMeter({"gpu:0": 61.0, "gpu:1": 58.0}), Clock()
    first = measure_baselines([meter], 30.0, 3600.0, tmp_path, now=clock, wait=meter.wait).as_dict()
    assert meter.windows == 1 and first["devices"]["gpu:0"]["power_w"] == pytest.approx(61.0)
    assert first["devices"]["gpu:1"]["cached"] is False and first["devices"]["gpu:1"]["age_s"] == 0
    assert len(list(tmp_path.glob("fixed-*.json"))) == 2  # one file per device

    clock.t += 1200
    second = measure_baselines([meter], 30.0, 3600.0, tmp_path, now=clock, wait=meter.wait).as_dict()
    assert meter.windows == 1  # nothing measured: both devices fresh in the cache
    assert second["devices"]["gpu:0"] | {"age_s": 0, "cached": False} == first["devices"]["gpu:0"]
    assert second["devices"]["gpu:0"]["age_s"] == pytest.approx(1200) and second["devices"]["gpu:0"]["cached"]

    clock.t += 2401  # now older than the TTL
    measure_baselines([meter], 30.0, 3600.0, tmp_path, now=clock, wait=meter.wait)
    assert meter.windows == 2
    measure_baselines([meter], 60.0, 3600.0, tmp_path, now=clock, wait=meter.wait)  # a longer baseline asked for
    assert meter.windows == 3
    measure_baselines([meter], 60.0, 0.0, tmp_path, now=clock, wait=meter.wait)  # ttl 0: always remeasure
    assert meter.windows == 4


def test_a_new_device_triggers_a_measurement_and_no_identity_means_no_cache(tmp_path: Path) -> None:
    clock = Clock()
    a = FixedPowerMeter({"gpu:0": 50.0}, {"gpu:0": "GPU-a"})
    measure_baselines([a], 5.0, 3600.0, tmp_path, now=clock, wait=a.wait)
    b = FixedPowerMeter({"gpu:0": 70.0}, {"gpu:0": "GPU-b"})  # another GPU behind the same CUDA ordinal
    got = measure_baselines([b], 5.0, 3600.0, tmp_path, now=clock, wait=b.wait).as_dict()
    assert b.windows == 1 and got["devices"]["gpu:0"]["power_w"] == pytest.approx(70.0)
    anon = FixedPowerMeter({"gpu:0": 40.0}, {})
    got = measure_baselines([anon], 5.0, 3600.0, tmp_path, now=clock, wait=anon.wait).as_dict()
    assert "not cached" in got["notes"][0] and got["devices"]["gpu:0"]["cached"] is False


def test_estimating_and_disabled_meters_get_no_baseline(tmp_path: Path) -> None:
    class Estimator(FixedPowerMeter):
        name = "codecarbon"

    est = Estimator({"cpu:codecarbon": 10.0})
    got = measure_baselines([est], 5.0, 3600.0, tmp_path, wait=est.wait).as_dict()
    assert est.windows == 0 and got["devices"] == {} and "estimates" in got["notes"][0]
    assert baseline_for([est], EnergyConfig(baseline_s=0.0)) is None


def test_rapl_baseline_on_a_fake_tree_is_its_idle_power(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_CACHE", str(tmp_path / "cache"))
    tree = intel_tree(tmp_path / "pc", package_w=22.0, dram_w=3.0)
    meter = RaplMeter(str(tmp_path / "pc"), sample_hz=50)
    meter.probe()
    with tree:
        got = baseline_for([meter], EnergyConfig(baseline_s=0.6))
    assert got is not None
    got = got.as_dict()
    assert got["devices"]["cpu:package-0"]["power_w"] == pytest.approx(22.0, rel=0.03)
    assert got["devices"]["dram:package-0"]["power_w"] == pytest.approx(3.0, rel=0.03)
    assert list((tmp_path / "cache" / "energy" / "baseline").glob("rapl-*.json"))


def test_nvml_baseline_is_keyed_by_gpu_uuid_and_adjusts_the_window(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim = host("H100", 8, clock=SimClock(), watts=70.0)  # 100 ms counter ticks, each GPU at its own phase
    sim.gpus[7].runs_caller = True
    monkeypatch.setitem(sys.modules, "pynvml", sim)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu_uuid(7))
    meter = sim_meter(sim, 50)
    meter.probe()
    typed = measure_baselines([meter], 0.4, 3600.0, tmp_path, wait=lambda s: run_for(meter, s))
    base = typed.as_dict()
    assert base["devices"]["gpu:0"]["identity"] == gpu_uuid(7)
    assert base["devices"]["gpu:0"]["duration_s"] == pytest.approx(0.4)
    assert base["devices"]["gpu:0"]["power_w"] == pytest.approx(70.0, abs=0.05)
    sim.set_power(7, 270.0)  # the workload adds 200 W above idle
    meter.start()
    run_for(meter, 0.5)
    reading = meter.stop()
    meter.close()
    window_s = reading.duration_s
    assert window_s == pytest.approx(0.5)
    block = energy_block([reading], [], window_s, output_tokens=50, requests=5, baseline=typed)
    assert block["gpu_j"] == pytest.approx(270.0 * 0.5, abs=0.05)
    adj = block["adjusted"]
    assert adj["gpu_j"] == pytest.approx(block["gpu_j"] - base["devices"]["gpu:0"]["power_w"] * window_s)
    assert adj["gpu_j"] == pytest.approx(200.0 * 0.5, abs=0.1)
    assert adj["j_per_output_token"] == pytest.approx(adj["gpu_j"] / 50)
    assert block["devices"][0]["adjusted_j"] == pytest.approx(adj["gpu_j"])
    assert block["j_per_output_token"] == pytest.approx(block["gpu_j"] / 50)  # raw kept beside adjusted
    assert not [w for w in block["warnings"] if "negative" in w]


def test_a_baseline_above_the_window_power_is_flagged() -> None:
    reading = EnergyReading("nvml", True, 2.0, [DeviceEnergy("gpu:0", "gpu", 100.0, "nvml_counter")])
    base = Baseline.from_dict({"devices": {"gpu:0": {"power_w": 80.0, "age_s": 3000.0, "kind": "gpu"}}, "notes": []})
    block = energy_block([reading], [], 2.0, 10, 1, baseline=base)
    assert block["adjusted"]["gpu_j"] == pytest.approx(-60.0)
    assert any("baseline-adjusted energy is negative" in w and "80.0 W" in w for w in block["warnings"])
