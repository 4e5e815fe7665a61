"""EnergyReading's typed fields (llem/energy/base.py) and what the energy block makes of them: the
result's energy.sampling, meter_details, attribution and unattributed_devices keep the keys they had
when these facts travelled in a dict, and a misspelt field fails instead of reading None."""

from __future__ import annotations

import dataclasses

import pytest

from llem.energy.base import (
    Attribution,
    CounterSampling,
    DeviceEnergy,
    EnergyCurve,
    EnergyReading,
    OtherProcesses,
    Sampling,
    Thermal,
    UnattributedDevice,
)
from llem.energy.block import DRIFT_LIMIT_C, MIN_SAMPLES, energy_block


def _gpu_reading(samples_min: int = 40, hz: float = 10.0) -> EnergyReading:
    return EnergyReading(
        "nvml", True, 4.0, [DeviceEnergy("gpu:0", "gpu", 400.0, "nvml_counter", {"uuid": "GPU-0"})],
        update_period_s=0.1,
        sampling=CounterSampling(hz, samples_min, 10.0, 14.0, counter_step_s=0.02),
        attribution=Attribution("nvml_processes", "GPUs where NVML lists a process", {"gpu:0": {"pids": [7], "job_pids": [7]}},
                                final=True),
        unattributed_devices=[UnattributedDevice("gpu:1", "gpu", 240.0, "GPU-1", "H100", "nvml_counter", 60.0, "idle")],
        curves={"gpu:0": EnergyCurve([10.0, 12.0, 14.0], [0.0, 200.0, 400.0])},
    )


def test_gpu_reading_becomes_the_result_keys() -> None:
    b = energy_block([_gpu_reading()], [], 4.0, output_tokens=100, requests=4)
    assert b["sampling"] == {"nvml": {"sample_hz": 10.0, "samples_min": 40, "update_period_s": 0.1,
                                      "counter_step_s": 0.02}}
    assert b["meter_details"]["nvml"] == {
        "update_period_s": 0.1, "sample_hz": 10.0, "samples_min": 40, "t_start_s": 10.0, "t_end_s": 14.0,
        "counter_step_s": 0.02, "sampled": True,
        "attribution": {"method": "nvml_processes", "devices": {"gpu:0": {"pids": [7], "job_pids": [7]}},
                        "reason": "GPUs where NVML lists a process"}}
    assert b["attribution"] == b["meter_details"]["nvml"]["attribution"]  # `final` is the meter's, not the result's
    assert b["unattributed_devices"] == [{"device": "gpu:1", "kind": "gpu", "energy_j": 240.0, "uuid": "GPU-1",
                                          "name": "H100", "method": "nvml_counter", "mean_power_w": 60.0, "why": "idle"}]
    assert b["gpu_j"] == 400.0  # the unattributed GPU is never in a total
    assert "curves" not in b["meter_details"]["nvml"]  # the phase split's input, not a result key


def test_attribution_without_devices_has_no_devices_key() -> None:
    assert Attribution("energy.gpu_indices", "restricted", final=True).as_dict() == \
        {"method": "energy.gpu_indices", "reason": "restricted"}


def test_rapl_and_node_sampling_have_no_counter_step_in_their_details() -> None:
    r = EnergyReading("rapl", True, 2.0, [DeviceEnergy("cpu:package-0", "cpu", 50.0, "rapl_counter")],
                      update_period_s=0.001, sampling=Sampling(100.0, 200, 1.0, 3.0),
                      details={"root": "/sys/class/powercap", "frozen_zones": []})
    b = energy_block([r], [], 2.0, output_tokens=10, requests=1)
    assert b["meter_details"]["rapl"] == {"update_period_s": 0.001, "sample_hz": 100.0, "samples_min": 200,
                                          "t_start_s": 1.0, "t_end_s": 3.0, "sampled": True,
                                          "root": "/sys/class/powercap", "frozen_zones": []}
    assert b["sampling"]["rapl"]["counter_step_s"] is None


def test_unsampled_meters_and_bare_readings() -> None:
    zeus = EnergyReading("zeus", True, 1.0, [DeviceEnergy("gpu:0", "gpu", 5.0, "zeus")], update_period_s=0.1)
    cc = EnergyReading("codecarbon", True, 1.0, [DeviceEnergy("cpu:codecarbon", "cpu", 5.0, "codecarbon_estimate",
                                                              estimate=True)], details={"estimate": True})
    bare = EnergyReading("nvml", True, 1.0, [DeviceEnergy("gpu:0", "gpu", 5.0, "nvml_counter")])
    assert zeus.meter_details() == {"update_period_s": 0.1, "sampled": False}
    assert cc.meter_details() == {"sampled": False, "estimate": True}
    assert bare.meter_details() is None
    b = energy_block([zeus], [], 1.0, 10, 1)
    assert b["sampling"] is None and b["meter_details"] == {"zeus": {"update_period_s": 0.1, "sampled": False}}
    assert "meter_details" not in energy_block([bare], [], 1.0, 10, 1)


def test_window_shorter_than_the_update_period_and_few_samples_are_warned_about() -> None:
    r = _gpu_reading(samples_min=MIN_SAMPLES - 1)
    warns = energy_block([r], [], 0.05, 10, 1)["warnings"]
    assert any("shorter than the nvml energy counter's update period" in w for w in warns)
    assert any(f"only {MIN_SAMPLES - 1} samples in the window" in w and "10.0 Hz" in w for w in warns)
    ok = energy_block([_gpu_reading(samples_min=MIN_SAMPLES)], [], 4.0, 10, 1)["warnings"]
    assert not any("samples in the window" in w or "update period" in w for w in ok)


def test_resolution_takes_the_counter_step_and_the_sample_interval() -> None:
    assert CounterSampling(10.0, 5, 0.0, 1.0, counter_step_s=0.25).intervals_s() == [0.25, 0.1]
    assert Sampling(4.0, 5, 0.0, 1.0).intervals_s() == [0.25]


def test_a_misspelt_field_is_an_error_not_a_silent_none() -> None:
    r = _gpu_reading()
    with pytest.raises(AttributeError):
        r.sampling.sample_rate_hz  # noqa: B018
    with pytest.raises(TypeError):
        EnergyReading("nvml", True, extra={"sampled": True})  # the old side channel is gone
    assert {f.name for f in dataclasses.fields(EnergyReading)} >= {"update_period_s", "sampling", "attribution",
                                                                   "unattributed_devices", "curves", "details"}


def _thermal(drift: float | None = 2.0, throttle: float = 0.0, persistence: str = "on") -> Thermal:
    return Thermal(40.0, 40.0 + (drift or 0), 40.0 + (drift or 0), drift, {"mean": 1980.0, "min": 1980.0, "max": 1980.0},
                   None, {"sw_power_cap": throttle}, 700.0, persistence)


def _gpu(thermal: Thermal | None, procs: OtherProcesses | None = None) -> EnergyReading:
    return EnergyReading("nvml", True, 4.0, [DeviceEnergy("gpu:0", "gpu", 400.0, "nvml_counter", {"uuid": "GPU-0"},
                                                          thermal=thermal, other_processes=procs)])


def test_gpu_devices_carry_thermal_and_other_processes_inside_extra() -> None:
    d = _gpu(_thermal(), OtherProcesses([5, 9], [9], True)).devices[0].as_dict()
    assert d["extra"] == {"uuid": "GPU-0", "thermal": vars(_thermal()), "other_processes":
                          {"pids": [5, 9], "others": [9], "attributable": True}}
    assert _gpu(_thermal()).devices[0].as_dict()["extra"]["other_processes"] is None  # not listed: null, not absent
    cpu = DeviceEnergy("cpu:package-0", "cpu", 5.0, "rapl_counter", {"zone": "intel-rapl:0"}).as_dict()
    assert cpu == {"device": "cpu:package-0", "kind": "cpu", "energy_j": 5.0, "method": "rapl_counter",
                   "extra": {"zone": "intel-rapl:0"}, "estimate": False}
    b = energy_block([_gpu(_thermal())], [], 4.0, 10, 1)
    assert b["thermal"] == {"gpu:0": vars(_thermal())} and b["devices"][0]["extra"]["thermal"] == vars(_thermal())


def test_thermal_and_other_process_warnings() -> None:
    def warns(reading: EnergyReading) -> str:
        return "\n".join(energy_block([reading], [], 4.0, 10, 1)["warnings"])

    assert warns(_gpu(_thermal())) == ""
    assert "temperature rose" not in warns(_gpu(_thermal(drift=DRIFT_LIMIT_C)))  # at the limit: not above it
    assert "temperature rose 11 °C" in warns(_gpu(_thermal(drift=DRIFT_LIMIT_C + 1)))
    assert "throttled during the window (sw_power_cap 0.50 s)" in warns(_gpu(_thermal(throttle=0.5)))
    assert "persistence mode is off" in warns(_gpu(_thermal(persistence="off")))
    assert "other processes use this GPU (pids [9])" in warns(_gpu(_thermal(), OtherProcesses([5, 9], [9], True)))
    assert "none is this job's" in warns(_gpu(_thermal(), OtherProcesses([9], [9], False)))
    assert warns(_gpu(_thermal(), OtherProcesses([5], [], True))) == ""
    assert warns(_gpu(None)) == ""  # a device without thermal facts (zeus, rapl): nothing to say
