"""NVML meter against the GPU simulator (tests/fakes/gpu_sim.py) installed where llem imports the real `pynvml`.

Windows run on the simulator's clock (`sim_meter`/`run_for`): the energy counter steps every 100 ms at
its own phase, as on the hardware, and a window of seconds takes milliseconds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest
from energy_fakes import SimClock, add_migs, gpu_uuid, host, run_for, sim_meter
from gpu_sim import REAL

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.block import energy_block
from llem.energy.meters.nvml.meter import POLL_S, NvmlMeter
from llem.energy.meters.rapl.config import RaplConfig


def _window(meter: NvmlMeter, seconds: float, during: Callable[[float], None] | None = None):
    """probe → start → `seconds` on the simulated clock → stop → close: (reading, t_first, t_last sample)."""
    meter.probe()
    meter.start()
    run_for(meter, seconds, during)
    reading = meter.stop()
    meter.close()
    return reading, reading.sampling.t_start_s, reading.sampling.t_end_s


def test_counter_energy_matches_simulated_power_and_integral_agrees(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=250.0))
    meter = sim_meter(sim, 50)
    meter.probe()
    assert meter.gpus[0].counter_step_s == pytest.approx(0.1, abs=0.002)  # measured, not assumed
    reading, t0, t1 = _window(meter, 0.6)
    (gpu,) = reading.devices
    assert reading.measured and gpu.device == "gpu:0" and gpu.kind == "gpu" and gpu.method == "nvml_counter"
    assert reading.duration_s == pytest.approx(0.6) and t1 - t0 == pytest.approx(0.6)
    # 6 counter steps of 25 J in the window: the tick-aligned counter is exact to its mJ resolution
    assert gpu.energy_j == pytest.approx(sim.true_energy(0, t0, t1), abs=0.005)
    assert gpu.energy_j == pytest.approx(150.0, abs=0.005)
    assert gpu.extra["integral_j"] == pytest.approx(gpu.extra["counter_j"], rel=0.001)
    assert abs(gpu.extra["integral_vs_counter_pct"]) < 0.1
    assert gpu.extra["power_source"] == "power_instant_field"
    assert gpu.extra["uuid"] == gpu_uuid(0) and gpu.thermal.power_limit_w == 700.0
    # 50 Hz for 0.6 s: 30 steps, plus the opening sample; one row per sample per device, units in the names
    rows = reading.timeseries
    assert len(rows) == 31 and gpu.extra["samples"] == len(rows)
    assert {"t_s", "power_w", "energy_j", "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct",
            "memory_used_bytes", "clock_event_reasons"} <= set(rows[0])
    assert rows[0]["energy_j"] == 0 and rows[-1]["energy_j"] == pytest.approx(gpu.energy_j)
    assert all(b["t_s"] > a["t_s"] for a, b in zip(rows, rows[1:]))
    assert all(r["power_w"] == 250.0 for r in rows)
    assert sim.shutdowns == 1


def test_power_steps_are_followed_by_counter_and_sampled_series(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=100.0))
    meter = sim_meter(sim, 100)
    meter.probe()
    t_step: list[float] = []

    def load(t: float) -> None:
        if not t_step and t - meter._t0 >= 0.3 - 1e-9:
            sim.set_power(0, 400.0)
            t_step.append(t)

    reading, t0, t1 = _window(meter, 0.6, load)
    gpu = reading.devices[0]
    rows = reading.timeseries
    assert rows[0]["power_w"] == 100.0 and rows[-1]["power_w"] == 400.0
    # the counter follows the step, though it fell between two ticks; what is left is where the edge ticks
    # were placed (midway between two polls): ± half a poll at 100 W and at 400 W
    tol = (100.0 + 400.0) * POLL_S / 2 + 0.005
    assert gpu.energy_j == pytest.approx(sim.true_energy(0, t0, t1), abs=tol)
    assert gpu.energy_j == pytest.approx(100.0 * 0.3 + 400.0 * 0.3, abs=tol)
    # the trapezoid errs by at most half the step × the sample gap around it (beside the counter's own)
    max_gap = max(b["t_s"] - a["t_s"] for a, b in zip(rows, rows[1:]))
    assert gpu.extra["integral_j"] == pytest.approx(gpu.extra["counter_j"], abs=300 * max_gap / 2 + tol)
    # per-row energy is as fine as the counter's ticks: exact a tick away from the step on either side
    far = [r for r in rows if abs(r["t_s"] - t_step[0]) > 0.1 + 1e-6]
    assert len(far) > 30
    for r in far:
        assert r["energy_j"] == pytest.approx(sim.true_energy(0, t0, r["t_s"]), abs=tol), r["t_s"] - t0


def test_gpu_without_counter_reports_the_power_integral(nvml_sim) -> None:
    sim = nvml_sim(host("P100", clock=SimClock(), watts=80.0))  # Pascal: no energy counter
    meter = sim_meter(sim, 50)
    meter.probe()
    assert "no counter" in meter.describe() and meter.gpus[0].power_source == "power_usage_instant"
    reading, t0, t1 = _window(meter, 0.5)
    gpu = reading.devices[0]
    assert gpu.method == "nvml_power_integral" and gpu.extra["counter_j"] is None
    assert gpu.energy_j == pytest.approx(80.0 * 0.5, rel=1e-3) and t1 - t0 == pytest.approx(0.5)


def test_every_visible_gpu_is_measured_per_gpu_and_in_total(nvml_sim) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock(), watts=[100.0, 300.0]))  # counters tick at different phases
    reading, t0, t1 = _window(sim_meter(sim, 20), 0.4)
    by = {d.device: d for d in reading.devices}
    assert set(by) == {"gpu:0", "gpu:1"}
    assert by["gpu:0"].energy_j == pytest.approx(100.0 * 0.4, abs=0.005)
    assert by["gpu:1"].energy_j == pytest.approx(300.0 * 0.4, abs=0.005)
    block = energy_block([reading], [], reading.duration_s, output_tokens=100, requests=4)
    assert block["gpu_j"] == pytest.approx(by["gpu:0"].energy_j + by["gpu:1"].energy_j)
    assert block["basis"] == "gpu" and block["j_per_output_token"] == pytest.approx(block["gpu_j"] / 100)
    assert {r["device"] for r in reading.timeseries} == {"gpu:0", "gpu:1"}


def test_cuda_visible_devices_maps_by_uuid_and_by_index(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host("H100", 4, clock=SimClock(), watts=[100.0 + i for i in range(4)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{gpu_uuid(3)},{gpu_uuid(1)[:12]}")
    meter = sim_meter(sim)
    meter.probe()
    assert [(g.device, g.uuid) for g in meter.gpus] == [("gpu:0", gpu_uuid(3)), ("gpu:1", gpu_uuid(1))]
    meter.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    meter = sim_meter(sim, gpu_indices=[1])
    meter.probe()
    assert [(g.device, g.uuid) for g in meter.gpus] == [("gpu:1", gpu_uuid(0))]
    meter.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MeterUnavailable, match="no GPU visible"):
        sim_meter(sim).probe()


def test_mig_instance_is_measured_as_its_whole_gpu_with_a_warning(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host("A100", 2, clock=SimClock(), watts=[100.0, 90.0]))
    (mig,) = add_migs(sim, 1, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig.uuid)
    reading, t0, t1 = _window(sim_meter(sim, 20), 0.2)
    (gpu,) = reading.devices
    assert gpu.device == "gpu:0" and gpu.extra["uuid"] == gpu_uuid(1) and gpu.extra["mig"] == mig.uuid
    assert gpu.energy_j == pytest.approx(90.0 * 0.2, abs=0.005)  # the parent's counter: NVML has none per instance
    assert any("MIG instance" in w and "whole GPU" in w for w in reading.warnings)


def test_gpu_indices_out_of_range_is_a_clear_error(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock()))
    with pytest.raises(MeterUnavailable, match=r"energy.gpu_indices=\[3\] is invalid.*0..0"):
        sim_meter(sim, gpu_indices=[3]).probe()


def test_thermal_and_process_warnings_reach_the_energy_block(nvml_sim) -> None:
    other = 999_999 if not os.path.exists("/proc/999999") else 999_998
    sim = nvml_sim(host("H100", clock=SimClock(), watts=70.0))  # idled long at 70 W: 32 + 0.1 °C/W × 70 = 39 °C
    g = sim.gpus[0]
    g.reasons, g.persistence, g.pids, g.runs_caller = 0x4 | 0x40 | 0x1, 0, [other], True
    meter = sim_meter(sim, 10)
    meter.probe()
    sim.set_power(0, 500.0)  # heads for 82 °C with a 20 s time constant
    reading, t0, t1 = _window(meter, 8.0)
    th = vars(reading.devices[0].thermal)
    assert th["temperature_start_c"] == 39 and th["temperature_end_c"] == int(g.temperature_at(t1))
    assert th["temperature_end_c"] - th["temperature_start_c"] >= 10 and th["temperature_max_c"] >= 50
    assert th["throttle_s"]["sw_power_cap"] == pytest.approx(8.0)
    assert th["throttle_s"]["hw_thermal_slowdown"] == pytest.approx(8.0) and "gpu_idle" not in th["throttle_s"]
    assert th["persistence_mode"] == "off" and th["sm_clock_mhz"]["mean"] == 1980
    block = energy_block([reading], [], reading.duration_s, 10, 1)
    text = "\n".join(block["warnings"])
    assert "temperature rose" in text and "throttled" in text and "hw_thermal_slowdown" in text
    assert "persistence mode is off" in text and f"pids [{other}]" in text
    assert block["thermal"]["gpu:0"]["persistence_mode"] == "off"
    rows = reading.timeseries
    assert rows[0]["throttle"] == "sw_power_cap,hw_thermal_slowdown"
    assert g.reasons  # unchanged


def test_older_driver_falls_back_to_throttle_reasons_and_deprecated_temperature(nvml_sim) -> None:
    sim = nvml_sim(host("A100", clock=SimClock(), old_driver=True))  # no ...EventReasons, no TemperatureV
    sim.gpus[0].reasons = 0x8
    reading, t0, t1 = _window(sim_meter(sim, 20), 0.2)
    dev = reading.devices[0]
    assert dev.thermal.throttle_s["hw_slowdown"] == pytest.approx(0.2)
    assert dev.thermal.temperature_start_c == int(32 + 0.1 * 55)
    assert dev.energy_j == pytest.approx(55.0 * 0.2, abs=0.005)


def test_short_window_and_few_samples_are_warned_about(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock()))
    reading, t0, t1 = _window(sim_meter(sim, 10), 0.02)
    assert t1 - t0 == pytest.approx(0.02)
    block = energy_block([reading], [], 0.02, 10, 1)
    text = "\n".join(block["warnings"])
    assert "shorter than the nvml energy counter's update period" in text
    assert "samples in the window (< 10" in text


def test_missing_bindings_and_driver_are_reported(nvml_sim, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    with pytest.raises(MeterUnavailable, match="pip install nvidia-ml-py"):
        NvmlMeter().probe()
    nvml_sim(host("H100", clock=SimClock(), init_error=REAL.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(MeterUnavailable, match="energy.meter=nvml: NVML could not start"):
        build_meters(EnergyConfig(meter="nvml"))
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path / "absent"))))
    assert [m.name for m in sel.meters] == ["none"]
    assert any(n.startswith("nvml: unavailable: NVML could not start") for n in sel.notes)
    assert any(n.startswith("rapl: unavailable: no RAPL powercap tree") for n in sel.notes)


@pytest.mark.slow
def test_llem_with_fake_nvml_reports_gpu_energy_phases_and_thermal(tmp_path, llem_cache) -> None:
    """The job path with NVML: baseline before load, thermal warmup, window, per-phase split, timeseries."""
    import pandas as pd
    from conftest import read_result, run_llem

    fake = tmp_path / "fake"
    fake.mkdir()
    from conftest import FAKES

    tests_dir = str(FAKES)  # tests/fakes: gpu_sim
    (fake / "pynvml.py").write_text(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\nfrom gpu_sim import gpu_uuid, host\n"
        "sim = host('H100', watts=150.0)\n"  # the real clock: the job runs in its own process
        "sim.gpus[0].uuid, sim.gpus[0].persistence, sim.gpus[0].runs_caller = gpu_uuid(5), 0, True\n"
        "sys.modules[__name__] = sim\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_llem(["energy=nvml", "energy.sample_hz=100", "energy.baseline_s=0.3", "energy.thermal_warmup_s=0.5",
                     "energy.thermal_plateau_s=0.2", "n=2", "pytorch.max_output_tokens=16"], work, llem_cache,
                    env={"PYTHONPATH": str(fake), "CUDA_VISIBLE_DEVICES": gpu_uuid(5)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in work.rglob("result.json")]
    r = read_result(folder)
    e = r["energy"]
    assert e["meters"] == ["nvml"] and e["basis"] == "gpu" and e["devices"][0]["extra"]["uuid"] == gpu_uuid(5)
    assert e["gpu_j"] == pytest.approx(150.0 * e["window_s"], rel=0.05)
    assert e["baseline"]["devices"]["gpu:0"]["power_w"] == pytest.approx(150.0, rel=0.02)
    assert e["baseline"]["devices"]["gpu:0"]["identity"] == gpu_uuid(5)
    assert e["thermal_warmup"]["steps"] >= 1 and e["thermal"]["gpu:0"]["persistence_mode"] == "off"
    assert any("persistence mode is off" in w for w in r["warnings"])
    ph = e["phases"]
    assert ph["prefill_j"] + ph["decode_j"] + ph["other_j"] == pytest.approx(ph["window"]["gpu_j"], rel=1e-9)
    ts = pd.read_parquet(folder / "timeseries.parquet")
    assert {"t_s", "power_w", "energy_j", "temperature_c", "sm_clock_mhz", "throttle"} <= set(ts.columns)
    assert set(ts["device"]) == {"gpu:0"} and (ts["power_w"] == 150.0).all()


def test_environment_records_the_gpu_driver_and_cuda_version(nvml_sim) -> None:
    from llem.env import snapshot

    nvml_sim(host("H100", driver="550.54.15", cuda=12040))
    env = snapshot()
    assert (env["driver_version"], env["cuda_version"]) == ("550.54.15", "12.4")
