"""Baseline / BaselineDevice: the typed `energy.baseline` block writes the keys (and order) result.json has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llem.config.schema import EnergyConfig
from llem.energy.base import DeviceEnergy, EnergyReading, Meter
from llem.energy.baseline import Baseline, BaselineDevice, cache_file, context_baseline, measure_baselines
from llem.energy.block import energy_block

CACHED = ["power_w", "kind", "meter", "measured_at_unix", "duration_s", "identity", "age_s", "cached"]


class Fixed(Meter):
    """Idles at `watts` per device for as long as the (fake) wait lasted; device identities `id-<device>`."""

    name, seconds = "nvml", 0.0

    def __init__(self, watts: dict[str, float]) -> None:
        self.watts = watts

    def identities(self) -> dict[str, str]:
        return {d: f"id-{d}" for d in self.watts}

    def start(self) -> None:
        pass

    def stop(self) -> EnergyReading:
        devices = [DeviceEnergy(d, "gpu", w * self.seconds, "fixed") for d, w in self.watts.items()]
        return EnergyReading(self.name, True, self.seconds, devices)

    def wait(self, s: float) -> None:
        self.seconds = s


def test_a_fresh_measurement_writes_the_cache_keys_then_age_and_cached(tmp_path: Path) -> None:
    m = Fixed({"gpu:0": 50.0})
    got = measure_baselines([m], 2.0, 60.0, tmp_path, now=lambda: 1000.0, wait=m.wait)
    assert isinstance(got, Baseline) and list(got.as_dict()) == ["duration_s", "ttl_s", "devices", "notes"]
    dev = got.as_dict()["devices"]["gpu:0"]
    assert list(dev) == CACHED and dev["power_w"] == 50.0 and dev["cached"] is False and dev["age_s"] == 0.0
    on_disk = json.loads(cache_file(tmp_path, "nvml", "id-gpu:0").read_text())
    assert on_disk == {k: dev[k] for k in BaselineDevice.CACHE_KEYS}  # no age, no cached flag in the cache
    again = measure_baselines([m], 2.0, 60.0, tmp_path, now=lambda: 1030.0, wait=m.wait).devices["gpu:0"]
    assert again.cached is True and again.age_s == 30.0 and again.power_w == 50.0


def test_context_fields_appear_only_after_the_context_step_and_duration_only_when_measured() -> None:
    pre = Baseline(1.0, 60.0, {"gpu:0": BaselineDevice(60.0, "gpu", "nvml", 1.0, 1.0, "u", 0.0, False)})
    assert "power_basis" not in pre.as_dict()["devices"]["gpu:0"]
    m = Fixed({"gpu:0": 90.0})
    got = context_baseline([m], EnergyConfig(baseline_s=2.0), pre, wait=m.wait).as_dict()["devices"]["gpu:0"]
    assert list(got) == [*CACHED, "idle_w_no_context", "idle_w_with_context", "power_basis", "context_duration_s"]
    assert (got["power_w"], got["idle_w_no_context"], got["context_duration_s"]) == (90.0, 60.0, 2.0)
    failed = Baseline(1.0, 60.0, {"gpu:0": BaselineDevice(60.0, "gpu", "nvml")})
    failed.devices["gpu:0"].power_basis = "no_context"
    out = failed.as_dict()["devices"]["gpu:0"]
    assert out["idle_w_with_context"] is None and "context_duration_s" not in out


def test_round_trip_and_the_adjusted_figures_read_the_typed_power() -> None:
    block = {"duration_s": 1.0, "ttl_s": 5.0, "devices": {"gpu:0": dict(zip(CACHED, [40.0, "gpu", "nvml", 9.0, 1.0,
                                                                                     None, 3.0, True]))},
             "notes": ["n"]}
    assert Baseline.from_dict(block).as_dict() == block
    reading = EnergyReading("nvml", True, 2.0, [DeviceEnergy("gpu:0", "gpu", 100.0, "nvml_counter")])
    e = energy_block([reading], [], 2.0, 10, 1, baseline=Baseline.from_dict(block))
    assert e["baseline"] == block and e["adjusted"]["gpu_j"] == pytest.approx(100.0 - 40.0 * 2.0)
    assert e["adjusted"]["baseline_power_w"]["gpu"] == 40.0
