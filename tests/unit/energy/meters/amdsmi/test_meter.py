"""energy=amdsmi against the AMD simulator (tests/fakes/amd_sim.py behind the `amdsmi` import): ground truth on
a simulated 8-GPU MI300X host with a busy GPU that is not the job's, MI250X's averaged power, explicit
and auto selection on hosts with and without AMD GPUs, and a real `python -m llem` run."""

from __future__ import annotations

import os
import sys

import amd_sim
import pytest
from amd_sim import host, install
from energy_fakes import run_for
from gpu_sim import SimClock

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.meters.amdsmi.meter import AmdsmiMeter


@pytest.fixture
def amd_host(monkeypatch):
    for k in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVIDIA library on an AMD host

    def put(sim):
        return install(monkeypatch, sim)

    return put


def _meter(sim, hz: float = 50.0) -> AmdsmiMeter:
    return AmdsmiMeter(hz, clock=sim.clock, sleep=sim.clock.sleep, threaded=False)


def test_job_gpu_energy_within_1pct_of_truth_and_the_busy_other_gpu_left_out(amd_host) -> None:
    sim = amd_host(host("MI300X", 8, clock=SimClock(), watts=[140.0] * 8))
    sim.gpus[3].runs_caller = True  # the job's GPU
    sim.gpus[6].pids = [4242]  # someone else's job, busy
    meter = _meter(sim)
    meter.probe()
    assert len(meter.gpus) == 8 and meter.update_period_s < 0.005  # ~1 ms updates: a continuous counter
    assert meter.attribute().method == "amdsmi_processes"
    sim.set_power(3, 600.0)
    sim.set_power(6, 700.0)
    meter.start()

    def load(t: float) -> None:  # the job's power steps half-way through
        if abs(t - meter._t0 - 1.0) < 1e-6:
            sim.set_power(3, 450.0)

    run_for(meter, 2.0, load)
    reading = meter.stop()
    meter.close()
    (gpu,) = reading.devices
    t0, t1 = reading.sampling.t_start_s, reading.sampling.t_end_s
    truth = sim.true_energy(3, t0, t1)
    err_pct = abs(gpu.energy_j - truth) / truth * 100
    print(f"amdsmi counter vs truth: {gpu.energy_j:.3f} J vs {truth:.3f} J ({err_pct:.4f} %)")
    assert gpu.device == "gpu:3" and gpu.method == "amdsmi_counter" and err_pct < 1.0
    assert truth == pytest.approx(1050.0, rel=1e-6)
    assert gpu.extra["power_source"] == "current_socket_power" and gpu.extra["uuid"] == sim.gpus[3].uuid
    assert gpu.extra["integral_j"] == pytest.approx(truth, rel=0.02)
    assert gpu.extra["amdsmi_index"] == 3 and gpu.thermal.power_limit_w == 750.0
    others = {u.device: vars(u) for u in reading.unattributed_devices}
    assert len(others) == 7 and others["gpu:6"]["energy_j"] == pytest.approx(1400.0, rel=0.01)
    assert "4242" in others["gpu:6"]["why"]
    assert sim.initialised == 0


def test_counter_that_wraps_mid_window_is_unfolded(amd_host) -> None:
    sim = amd_host(host("MI300X", 1, clock=SimClock(), watts=[500.0]))
    sim.gpus[0].counter_bits = 32
    sim.gpus[0].counter_start_ticks = (1 << 32) - 30_000_000  # wraps ~0.9 s into the window
    meter = _meter(sim)
    meter.probe()
    meter.start()
    run_for(meter, 2.0)
    reading = meter.stop()
    meter.close()
    truth = sim.true_energy(0, reading.sampling.t_start_s, reading.sampling.t_end_s)
    assert reading.devices[0].method == "amdsmi_counter"
    assert reading.devices[0].energy_j == pytest.approx(truth, rel=0.01)


def test_mi250x_averaged_power_is_noted_and_a_gpu_without_counter_uses_the_integral(amd_host) -> None:
    sim = amd_host(host("MI250X", 2, clock=SimClock(), watts=[300.0, 300.0]))
    sim.gpus[1].unsupported.add("amdsmi_get_energy_count")
    meter = _meter(sim, 20.0)
    meter.probe()
    sim.clock.advance(1.5)  # the SMU's 1 s average has settled on 300 W
    meter.start()
    run_for(meter, 1.0)
    reading = meter.stop()
    meter.close()
    by = {d.device: d for d in reading.devices}
    assert by["gpu:0"].method == "amdsmi_counter" and by["gpu:1"].method == "amdsmi_power_integral"
    assert by["gpu:1"].energy_j == pytest.approx(300.0, rel=0.01)
    assert by["gpu:0"].extra["power_source"] == "average_socket_power"
    assert any("average_socket_power" in w for w in reading.warnings)


def test_hip_visible_devices_pick_the_measured_gpus(amd_host, monkeypatch) -> None:
    sim = amd_host(host("MI300X", 8, clock=SimClock()))
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "4,5,6")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,0")
    meter = _meter(sim)
    meter.probe()
    assert [(g.device, g.uuid) for g in meter.gpus] == [("gpu:0", sim.gpus[6].uuid), ("gpu:1", sim.gpus[4].uuid)]
    meter.close()


def test_explicit_amdsmi_without_amd_gpus_fails_and_auto_records_why(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    monkeypatch.syspath_prepend(amd_sim.sim_folder(tmp_path, import_error="KeyError"))
    with pytest.raises(MeterUnavailable) as e:
        build_meters(EnergyConfig(meter="amdsmi"))
    assert str(e.value).startswith("energy.meter=amdsmi: amdsmi cannot be imported (KeyError") and "\n" not in str(e.value)
    sel = build_meters(EnergyConfig(meter="auto", cpu=False))
    assert [m.name for m in sel.meters] == ["none"]
    assert any(n.startswith("amdsmi: unavailable: amdsmi cannot be imported") for n in sel.notes)


def test_auto_picks_amdsmi_on_an_amd_host_and_nvml_first_where_both(amd_host, monkeypatch) -> None:
    amd_host(host("MI300X", 2, clock=SimClock()))
    sel = build_meters(EnergyConfig(meter="auto", cpu=False, sample_hz=10.0))
    assert [m.name for m in sel.meters] == ["amdsmi"] and any("nvml: unavailable" in n for n in sel.notes)
    for m in sel.meters:
        m.close()


# -- the user-visible scenario, end to end -------------------------------------------------------------------
@pytest.mark.slow
def test_llem_auto_on_a_simulated_amd_host_measures_the_jobs_gpu(tmp_path, llem_cache) -> None:
    from conftest import read_result, run_llem

    fake = amd_sim.sim_folder(tmp_path / "fake", "sim = amd_sim.host('MI300X', 8, watts=[140.0] * 8)\n"
                                                 "sim.gpus[2].runs_caller = True\nsim.set_power(2, 520.0)\n"
                                                 "sim.gpus[5].pids = [4242]\nsim.set_power(5, 700.0)")
    nonvml = tmp_path / "nonvml"
    nonvml.mkdir()
    (nonvml / "pynvml.py").write_text("raise ImportError('no NVIDIA library here')\n")
    work = tmp_path / "work"
    work.mkdir()
    path = os.pathsep.join([fake, str(nonvml), os.environ.get("PYTHONPATH", "")])
    proc = run_llem(["energy=auto", "energy.cpu=false", "energy.sample_hz=50", "energy.baseline_s=0", "n=2",
                     "pytorch.max_output_tokens=16"], work, llem_cache, env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in work.rglob("result.json")]
    e = read_result(folder)["energy"]
    assert [d["device"] for d in e["devices"]] == ["gpu:2"] and e["attribution"]["method"] == "amdsmi_processes"
    # the job's 520 W GPU, not the idle 140 W ones nor the other tenant's 700 W one; the window here is a few
    # tens of ms (n=2 x 16 tokens), where the edges alone move the mean by ~1 % (read 526.7 W once in CI);
    # the meter's accuracy on known energy is test_job_gpu_energy_within_1pct_of_truth_... (0.009 %)
    assert e["mean_power_w"] == pytest.approx(520.0, rel=0.05)
    assert len(e["unattributed_devices"]) == 7
    # the same job asking for amdsmi on a host without AMD's library: exit 2, one line, before the model loads
    broken = amd_sim.sim_folder(tmp_path / "broken", import_error="KeyError")
    work2 = tmp_path / "work2"
    work2.mkdir()
    proc = run_llem(["energy=amdsmi", "n=2"], work2, llem_cache,
                    env={"PYTHONPATH": os.pathsep.join([broken, os.environ.get("PYTHONPATH", "")]),
                         "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("llem:")]
    assert len(lines) == 1 and "energy.meter=amdsmi" in lines[0] and "amdsmi cannot be imported" in lines[0]
    assert "Traceback" not in proc.stderr
    (folder,) = [p.parent for p in work2.rglob("result.json")]
    assert "load_s" not in read_result(folder).get("timing", {})
