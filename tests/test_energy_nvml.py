"""NVML meter against a fake `pynvml` module installed where llem imports the real one."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

import pytest
from energy_fakes import FakeGpu, FakePynvml, uuid

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.nvml import NvmlMeter
from llem.energy.summary import energy_block


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePynvml]:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def install(gpus: list[FakeGpu], **kw: object) -> FakePynvml:
        module = FakePynvml(gpus, **kw)  # type: ignore[arg-type]
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


def _window(meter: NvmlMeter, seconds: float, during: Callable[[], None] | None = None):
    meter.start()
    if during:
        during()
    else:
        threading.Event().wait(seconds)
    reading = meter.stop()
    meter.close()
    return reading


def test_counter_energy_matches_simulated_power_and_integral_agrees(fake_nvml) -> None:
    nv = fake_nvml([FakeGpu(uuid(0), power_w=250.0)])
    meter = NvmlMeter(sample_hz=50)
    meter.probe()
    reading = _window(meter, 0.6)
    (gpu,) = reading.devices
    assert reading.measured and gpu.device == "gpu:0" and gpu.kind == "gpu" and gpu.method == "nvml_counter"
    assert gpu.energy_j == pytest.approx(250.0 * reading.duration_s, rel=0.01)
    assert gpu.extra["integral_j"] == pytest.approx(gpu.extra["counter_j"], rel=0.02)
    assert abs(gpu.extra["integral_vs_counter_pct"]) < 2
    assert gpu.extra["uuid"] == uuid(0) and gpu.extra["thermal"]["power_limit_w"] == 700.0
    # ~50 Hz for 0.6 s, plus the two edge samples; one row per sample per device, units in the names
    rows = reading.timeseries
    assert 20 <= len(rows) <= 40 and gpu.extra["samples"] == len(rows)
    assert {"t_s", "power_w", "energy_j", "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct",
            "memory_used_bytes", "clock_event_reasons"} <= set(rows[0])
    assert rows[0]["energy_j"] == 0 and rows[-1]["energy_j"] == pytest.approx(gpu.energy_j)
    assert all(b["t_s"] > a["t_s"] for a, b in zip(rows, rows[1:]))
    assert nv.shutdowns == 1


def test_power_steps_are_followed_by_counter_and_sampled_series(fake_nvml) -> None:
    nv = fake_nvml([FakeGpu(uuid(0), power_w=100.0)])
    meter = NvmlMeter(sample_hz=100)

    def load() -> None:
        threading.Event().wait(0.3)
        nv.set_power(0, 400.0)
        threading.Event().wait(0.3)

    reading = _window(meter, 0, load)
    gpu = reading.devices[0]
    rows = reading.timeseries
    assert rows[0]["power_w"] == 100.0 and rows[-1]["power_w"] == 400.0
    # the counter is exact; the trapezoid errs by at most half the step × the sample gap around it
    max_gap = max(b["t_s"] - a["t_s"] for a, b in zip(rows, rows[1:]))
    assert gpu.extra["integral_j"] == pytest.approx(gpu.extra["counter_j"], abs=300 * max_gap / 2 + 0.01)
    assert 100 * reading.duration_s < gpu.energy_j < 400 * reading.duration_s
    step = next(r["t_s"] for r in rows if r["power_w"] == 400.0)  # first sample after the step
    before = [r for r in rows if r["t_s"] < step][-1]
    assert before["energy_j"] == pytest.approx(100.0 * (before["t_s"] - rows[0]["t_s"]), rel=0.01)


def test_gpu_without_counter_reports_the_power_integral(fake_nvml) -> None:
    fake_nvml([FakeGpu(uuid(0), power_w=80.0, has_counter=False)])
    meter = NvmlMeter(sample_hz=50)
    meter.probe()
    assert "no counter" in meter.describe()
    reading = _window(meter, 0.5)
    gpu = reading.devices[0]
    assert gpu.method == "nvml_power_integral" and gpu.extra["counter_j"] is None
    assert gpu.energy_j == pytest.approx(80.0 * reading.duration_s, rel=0.01)


def test_every_visible_gpu_is_measured_per_gpu_and_in_total(fake_nvml) -> None:
    fake_nvml([FakeGpu(uuid(0), power_w=100.0), FakeGpu(uuid(1), power_w=300.0)])
    meter = NvmlMeter(sample_hz=20)
    reading = _window(meter, 0.4)
    by = {d.device: d for d in reading.devices}
    assert set(by) == {"gpu:0", "gpu:1"}
    assert by["gpu:1"].energy_j == pytest.approx(3 * by["gpu:0"].energy_j, rel=0.02)
    block = energy_block([reading], [], reading.duration_s, output_tokens=100, requests=4)
    assert block["gpu_j"] == pytest.approx(by["gpu:0"].energy_j + by["gpu:1"].energy_j)
    assert block["basis"] == "gpu" and block["j_per_output_token"] == pytest.approx(block["gpu_j"] / 100)
    assert {r["device"] for r in reading.timeseries} == {"gpu:0", "gpu:1"}


def test_cuda_visible_devices_maps_by_uuid_and_by_index(fake_nvml, monkeypatch) -> None:
    fake_nvml([FakeGpu(uuid(i), power_w=100.0 + i) for i in range(4)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{uuid(3)},{uuid(1)[:12]}")
    meter = NvmlMeter()
    meter.probe()
    assert [(g.device, g.uuid) for g in meter.gpus] == [("gpu:0", uuid(3)), ("gpu:1", uuid(1))]
    meter.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    meter = NvmlMeter(gpu_indices=[1])
    meter.probe()
    assert [(g.device, g.uuid) for g in meter.gpus] == [("gpu:1", uuid(0))]
    meter.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MeterUnavailable, match="no GPU visible"):
        NvmlMeter().probe()


def test_mig_instance_is_measured_as_its_whole_gpu_with_a_warning(fake_nvml, monkeypatch) -> None:
    fake_nvml([FakeGpu(uuid(0)), FakeGpu(uuid(1), power_w=90.0)])
    mig = "MIG-" + uuid(1)[4:12] + "-aaaa-bbbb"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig)
    reading = _window(NvmlMeter(sample_hz=20), 0.2)
    (gpu,) = reading.devices
    assert gpu.device == "gpu:0" and gpu.extra["uuid"] == uuid(1) and gpu.extra["mig"] == mig
    assert gpu.energy_j == pytest.approx(90.0 * reading.duration_s, rel=0.01)
    assert any("MIG instance" in w and "whole GPU" in w for w in reading.warnings)


def test_gpu_indices_out_of_range_is_a_clear_error(fake_nvml) -> None:
    fake_nvml([FakeGpu(uuid(0))])
    with pytest.raises(MeterUnavailable, match=r"energy.gpu_indices=\[3\] is invalid.*0..0"):
        NvmlMeter(gpu_indices=[3]).probe()


def test_thermal_and_process_warnings_reach_the_energy_block(fake_nvml) -> None:
    other = 999_999 if not os.path.exists("/proc/999999") else 999_998
    nv = fake_nvml([FakeGpu(uuid(0), power_w=500.0, temp_rise_c_per_kj=40.0, reasons=0x4 | 0x40 | 0x1,
                            persistence=0, pids=[os.getpid(), other])])
    reading = _window(NvmlMeter(sample_hz=40), 0.6)
    th = reading.devices[0].extra["thermal"]
    assert th["temperature_end_c"] - th["temperature_start_c"] >= 10 and th["temperature_max_c"] >= 50
    assert th["throttle_s"]["sw_power_cap"] == pytest.approx(reading.duration_s, rel=0.05)
    assert th["throttle_s"]["hw_thermal_slowdown"] > 0 and "gpu_idle" not in th["throttle_s"]
    assert th["persistence_mode"] == "off" and th["sm_clock_mhz"]["mean"] == 1980
    block = energy_block([reading], [], reading.duration_s, 10, 1)
    text = "\n".join(block["warnings"])
    assert "temperature rose" in text and "throttled" in text and "hw_thermal_slowdown" in text
    assert "persistence mode is off" in text and f"pids [{other}]" in text
    assert block["thermal"]["gpu:0"]["persistence_mode"] == "off"
    rows = reading.timeseries
    assert rows[0]["throttle"] == "sw_power_cap,hw_thermal_slowdown"
    assert nv.gpus[0].reasons  # unchanged


def test_older_driver_falls_back_to_throttle_reasons(fake_nvml) -> None:
    fake_nvml([FakeGpu(uuid(0), reasons=0x8)], event_reasons=False)
    reading = _window(NvmlMeter(sample_hz=20), 0.2)
    assert reading.devices[0].extra["thermal"]["throttle_s"]["hw_slowdown"] > 0


def test_short_window_and_few_samples_are_warned_about(fake_nvml) -> None:
    fake_nvml([FakeGpu(uuid(0), counter_period_s=0.1)])
    reading = _window(NvmlMeter(sample_hz=10), 0.02)
    block = energy_block([reading], [], 0.02, 10, 1)
    text = "\n".join(block["warnings"])
    assert "shorter than the nvml energy counter's update period" in text
    assert "samples in the window (< 10" in text


def test_missing_bindings_and_driver_are_reported(fake_nvml, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    with pytest.raises(MeterUnavailable, match="pip install nvidia-ml-py"):
        NvmlMeter().probe()
    fake_nvml([FakeGpu(uuid(0))], init_error=True)
    with pytest.raises(MeterUnavailable, match="energy.meter=nvml: NVML could not start"):
        build_meters(EnergyConfig(meter="nvml"))
    sel = build_meters(EnergyConfig(meter="auto", rapl_root=str(tmp_path / "absent")))
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
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    (fake / "pynvml.py").write_text(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\nfrom energy_fakes import FakeGpu, FakePynvml, uuid\n"
        "sys.modules[__name__] = FakePynvml([FakeGpu(uuid(5), power_w=150.0, persistence=0)])\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_llem(["energy=nvml", "energy.sample_hz=100", "energy.baseline_s=0.3", "energy.thermal_warmup_s=0.5",
                     "energy.thermal_plateau_s=0.2", "n=2", "pytorch.max_output_tokens=16"], work, llem_cache,
                    env={"PYTHONPATH": str(fake), "CUDA_VISIBLE_DEVICES": uuid(5)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in work.rglob("result.json")]
    r = read_result(folder)
    e = r["energy"]
    assert e["meters"] == ["nvml"] and e["basis"] == "gpu" and e["devices"][0]["extra"]["uuid"] == uuid(5)
    assert e["gpu_j"] == pytest.approx(150.0 * e["window_s"], rel=0.05)
    assert e["baseline"]["devices"]["gpu:0"]["power_w"] == pytest.approx(150.0, rel=0.02)
    assert e["baseline"]["devices"]["gpu:0"]["identity"] == uuid(5)
    assert e["thermal_warmup"]["steps"] >= 1 and e["thermal"]["gpu:0"]["persistence_mode"] == "off"
    assert any("persistence mode is off" in w for w in r["warnings"])
    ph = e["phases"]
    assert ph["prefill_j"] + ph["decode_j"] + ph["other_j"] == pytest.approx(ph["window"]["gpu_j"], rel=1e-9)
    ts = pd.read_parquet(folder / "timeseries.parquet")
    assert {"t_s", "power_w", "energy_j", "temperature_c", "sm_clock_mhz", "throttle"} <= set(ts.columns)
    assert set(ts["device"]) == {"gpu:0"} and (ts["power_w"] == 150.0).all()


def test_environment_records_the_gpu_driver_and_cuda_version(fake_nvml: Callable[..., FakePynvml]) -> None:
    from llem.env import snapshot

    fake_nvml([FakeGpu("GPU-a")])
    env = snapshot()
    assert (env["driver_version"], env["cuda_version"]) == ("550.54.15", "12.4")
