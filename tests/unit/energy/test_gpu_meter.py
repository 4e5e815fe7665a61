"""llem's GPU path against the GPU simulator (tests/fakes/gpu_sim.py): attribution, MIG, power sources, counter
ticks, the prefill/decode split, device identity and failures — each on known numbers.

Windows run on the simulator's clock (`SimClock`): the meter samples when the test advances time, so a
5-second window takes milliseconds and no test depends on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import gpu_sim
import pytest
from gpu_sim import MODELS, SimClock, SimNvml, add_migs, gpu_uuid, host

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.block import energy_block
from llem.energy.meters.nvml.meter import NvmlMeter
from llem.energy.meters.rapl.config import RaplConfig
from llem.energy.phases import phase_energy
from llem.measure.latency import Phase


def sim_meter(sim: SimNvml, hz: float = 10.0, **kw: object) -> NvmlMeter:
    clock = sim.clock
    assert isinstance(clock, SimClock)
    return NvmlMeter(hz, clock=clock, sleep=clock.sleep, threaded=False, **kw)  # type: ignore[arg-type]


def window(meter: NvmlMeter, seconds: float, during: Callable[[float], None] | None = None):
    """start → `seconds` of samples at the meter's rate on the simulated clock → stop. `during(t)` runs
    before each sample (script the power there). Returns (reading, t_first_sample, t_last_sample)."""
    clock = meter.clock
    meter.probe()
    meter.start()
    t0 = meter._t0
    dt = 1.0 / meter.sample_hz
    for _ in range(round(seconds / dt)):
        clock.advance(dt)  # type: ignore[attr-defined]
        if during:
            during(clock())
        meter.sample_now()
    reading = meter.stop()
    t1 = reading.sampling.t_end_s
    meter.close()
    return reading, t0, t1


# -- point 1: only the job's GPUs count ----------------------------------------------------------------
def test_job_on_one_h100_of_eight_reports_that_gpu_not_the_host(nvml_sim) -> None:
    sim = nvml_sim(host("H100", 8, clock=SimClock(), watts=[73.0] * 8))
    sim.gpus[3].runs_caller = True
    sim.gpus[5].pids = [424242]  # someone else's job
    sim.set_power(3, 400.0)
    meter = sim_meter(sim)
    meter.probe()
    assert meter.attribute().method == "nvml_processes"
    reading, t0, t1 = window(meter, 5.0)
    block = energy_block([reading], [], t1 - t0, output_tokens=1000, requests=10)
    assert [d["device"] for d in block["devices"]] == ["gpu:3"]
    assert block["mean_power_w"] == pytest.approx(400.0, rel=0.01)  # not 400 + 7 × 73 = 911 W
    assert block["gpu_j"] == pytest.approx(sim.true_energy(3, t0, t1), rel=0.01)
    left = {u["device"]: u for u in block["unattributed_devices"]}
    assert sorted(left) == [f"gpu:{i}" for i in range(8) if i != 3]
    assert left["gpu:5"]["energy_j"] == pytest.approx(73.0 * (t1 - t0), rel=0.01)
    assert "424242" in left["gpu:5"]["why"] and "none" in left["gpu:0"]["why"]
    assert block["attribution"]["method"] == "nvml_processes"
    assert "unattributed_devices" not in block["meter_details"]["nvml"]
    # the per-phase curves only carry the job's GPU
    ph = phase_energy([reading], [Phase(t0 + 1, t0 + 1.5, t0 + 4)], t0, t1)
    assert set(ph["window"]["devices"]) == {"gpu:3"}


def test_without_a_job_process_the_visible_gpus_count_and_gpu_indices_restrict(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host("H100", 8, clock=SimClock(), watts=[100.0 * (i + 1) for i in range(8)]))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    meter = sim_meter(sim)
    meter.probe()
    att = meter.attribute()
    assert att.method == "cuda_visible_devices" and "no process of this job" in att.reason
    reading, t0, t1 = window(meter, 1.0)
    assert {d.extra["uuid"]: round(d.energy_j / (t1 - t0)) for d in reading.devices} == \
        {gpu_uuid(2): 300, gpu_uuid(5): 600}
    meter = sim_meter(sim, gpu_indices=[1])
    reading, t0, t1 = window(meter, 1.0)
    assert [(d.device, d.extra["uuid"]) for d in reading.devices] == [("gpu:1", gpu_uuid(5))]
    assert reading.attribution.method == "energy.gpu_indices"


# -- point 3: MIG counted once -----------------------------------------------------------------------------
def test_two_mig_instances_of_one_gpu_count_it_once_with_a_warning(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host(["A100", "A100"], clock=SimClock(), watts=[300.0, 55.0]))
    a, b = add_migs(sim, 0, 2)
    a.runs_caller = True
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{a.uuid},{b.uuid}")
    meter = sim_meter(sim)
    meter.probe()
    meter.attribute()
    reading, t0, t1 = window(meter, 2.0)
    block = energy_block([reading], [], t1 - t0, 100, 1)
    (dev,) = block["devices"]
    assert block["mean_power_w"] == pytest.approx(300.0, rel=0.01)  # not 2 × 300
    assert dev["extra"]["mig_instances"] == [a.uuid, b.uuid] and dev["extra"]["uuid"] == gpu_uuid(0)
    assert any("MIG" in w and "no per-instance energy" in w for w in block["warnings"])


def test_shortened_and_legacy_mig_identifiers_resolve_or_fail_clearly(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host(["H100", "H100"], clock=SimClock()))
    migs = add_migs(sim, 1, 3)
    for cvd, want in ((migs[2].uuid[:13], migs[2].uuid), (f"MIG-{gpu_uuid(1)}/2/0", migs[1].uuid)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
        meter = sim_meter(sim)
        meter.probe()
        assert meter.gpus[0].migs == [want] and meter.gpus[0].uuid == gpu_uuid(1)
        meter.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"MIG-{gpu_uuid(1)}/7/0")
    with pytest.raises(MeterUnavailable, match=r"no MIG instance with GPU instance 7 and compute instance 0"):
        sim_meter(sim).probe()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0001")  # a prefix of all three
    with pytest.raises(MeterUnavailable, match="matches several MIG instances"):
        sim_meter(sim).probe()


# -- point 4: power as the GPU measures it -------------------------------------------------------------------
@pytest.mark.parametrize("model, source", [("H100", "power_instant_field"), ("A100", "power_instant_field"),
                                           ("V100", "power_usage_instant"), ("A100-no-field", "power_usage_instant"),
                                           ("A10-no-field", "power_usage_1s_average")])
def test_power_source_per_gpu_family(nvml_sim, model, source) -> None:
    name = model.removesuffix("-no-field")
    sim = nvml_sim(host(name, clock=SimClock(), watts=100.0))
    if model.endswith("-no-field"):  # a driver without NVML_FI_DEV_POWER_INSTANT
        sim.gpus[0].model = dataclasses.replace(MODELS[name], power_instant_field=False)
    meter = sim_meter(sim, hz=20)

    def step(t: float) -> None:
        if abs(t - (meter._t0 + 0.5)) < 1e-6:
            sim.set_power(0, 500.0)

    reading, t0, _ = window(meter, 1.0, step)
    (dev,) = reading.devices
    assert dev.extra["power_source"] == source
    first_after = next(r for r in reading.timeseries if r["t_s"] > t0 + 0.5 - 1e-6)
    if source == "power_usage_1s_average":  # Ampere non-GA100 averages over 1 s: the step shows late
        assert first_after["power_w"] == pytest.approx(100.0, abs=5)
        assert any("1-second average" in w for w in reading.warnings)
    else:
        assert first_after["power_w"] == pytest.approx(500.0)


def test_hopper_power_usage_is_averaged_but_llem_reads_power_instant(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=100.0))
    sim.nvmlInit()
    h = sim.nvmlDeviceGetHandleByIndex(0)
    sim.set_power(0, 700.0)
    sim.clock.advance(0.25)
    assert sim.nvmlDeviceGetPowerUsage(h) == pytest.approx(250_000, rel=1e-6)  # 1-s average
    fv = sim.nvmlDeviceGetFieldValues(h, [sim.NVML_FI_DEV_POWER_INSTANT])[0]
    assert isinstance(fv, gpu_sim.REAL.c_nvmlFieldValue_t) and fv.nvmlReturn == sim.NVML_SUCCESS
    assert fv.value.uiVal == 700_000 and fv.timestamp == int(sim.clock() * 1e6)


def test_pre_volta_has_no_counter_and_uses_the_power_integral(nvml_sim) -> None:
    sim = nvml_sim(host("P100", clock=SimClock(), watts=150.0))
    reading, t0, t1 = window(sim_meter(sim, hz=20), 2.0)
    (dev,) = reading.devices
    assert dev.method == "nvml_power_integral" and dev.extra["counter_j"] is None
    assert dev.energy_j == pytest.approx(150.0 * (t1 - t0), rel=1e-6)


# -- point 5: counter ticks ---------------------------------------------------------------------------------
def _tick_errors(nvml_sim, phase: float) -> tuple[float, float, float | None]:
    sim = nvml_sim(host("H100", clock=SimClock(1000.0 + phase), watts=100.0))
    meter = sim_meter(sim)
    meter.probe()
    meter.start()
    sim.set_power(0, 500.0)  # load starts with the window and ends with it
    for _ in range(49):
        sim.clock.advance(0.1)
        meter.sample_now()
    sim.clock.advance(0.1 + phase * 6)  # the window ends anywhere between two counter ticks
    meter.sample_now()
    sim.set_power(0, 100.0)
    reading = meter.stop()
    meter.close()
    a, b = reading.sampling.t_start_s, reading.sampling.t_end_s
    truth = sim.true_energy(0, a, b)
    dev = reading.devices[0]
    return (dev.energy_j - truth) / truth, (dev.extra["counter_uncorrected_j"] - truth) / truth, \
        reading.sampling.counter_step_s


def test_window_energy_within_1pct_of_truth_despite_100ms_counter_ticks(nvml_sim) -> None:
    errors = [_tick_errors(nvml_sim, k * 0.0137) for k in range(8)]
    corrected = max(abs(e) for e, _, _ in errors)
    naive = max(abs(n) for _, n, _ in errors)
    print(f"5 s windows, 100 ms ticks: corrected max error {corrected:.4%}, uncorrected {naive:.4%}")
    assert corrected < 0.01
    assert naive > 0.01  # reading the counter at the sample times alone misses up to a tick at an edge
    assert all(step == pytest.approx(0.1, abs=0.002) for _, _, step in errors)


def test_prefill_decode_split_within_3pct_with_100ms_ticks(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(500.0), watts=90.0))
    meter = sim_meter(sim, hz=10)
    meter.probe()
    meter.start()
    t = sim.clock() + 0.013
    phases = []
    for _ in range(3):  # prefill 0.25 s at 650 W, decode 1.35 s at 420 W, 40 ms gap at 150 W
        sim.script(0, [(0.25, 650.0), (1.35, 420.0), (0.04, 150.0)], start=t)
        phases.append(Phase(t, t + 0.25, t + 1.6))
        t += 1.64
    for _ in range(52):
        sim.clock.advance(0.1)
        meter.sample_now()
    reading = meter.stop()
    meter.close()
    w0, w1 = reading.sampling.t_start_s, reading.sampling.t_end_s
    ph = phase_energy([reading], phases, w0, w1)
    prefill_true, decode_true = 3 * 0.25 * 650.0, 3 * 1.35 * 420.0
    err_p = ph["prefill"]["gpu_j"] / prefill_true - 1
    err_d = ph["decode"]["gpu_j"] / decode_true - 1
    print(f"prefill error {err_p:.3%}, decode error {err_d:.3%}, window error "
          f"{ph['window']['gpu_j'] / sim.true_energy(0, w0, w1) - 1:.4%}")
    assert abs(err_p) < 0.03 and abs(err_d) < 0.03
    assert ph["resolution_s"] == pytest.approx(0.1, abs=0.002)
    assert ph["prefill"]["gpu_j"] + ph["decode"]["gpu_j"] + ph["other"]["gpu_j"] == \
        pytest.approx(ph["window"]["gpu_j"], rel=1e-9)


def test_resolution_is_the_counter_step_when_sampling_faster(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=200.0))
    reading, t0, t1 = window(sim_meter(sim, hz=50), 1.0)
    ph = phase_energy([reading], [Phase(t0 + 0.2, t0 + 0.3, t0 + 0.9)], t0, t1)
    assert reading.sampling.counter_step_s == pytest.approx(0.1, abs=0.002)
    assert ph["resolution_s"] == pytest.approx(0.1, abs=0.002)


# -- point 2: device identity ----------------------------------------------------------------------------------
def test_mixed_models_indices_refused_unless_pci_order(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host(["V100", "A100", "V100"], clock=SimClock()))  # CUDA fastest-first: the A100 comes first
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(MeterUnavailable, match="CUDA_DEVICE_ORDER=FASTEST_FIRST on a host mixing GPU models"):
        sim_meter(sim).probe()
    for order in ("PCI_BUS_ID", None):
        if order:
            monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"0,{gpu_uuid(1)[:12]}" if order else gpu_uuid(2))
        meter = sim_meter(sim)
        meter.probe()
        got = [(g.device, g.uuid) for g in meter.gpus]
        meter.close()
        assert got == ([("gpu:0", gpu_uuid(0)), ("gpu:1", gpu_uuid(1))] if order else [("gpu:0", gpu_uuid(2))])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    meter = sim_meter(sim)
    meter.probe()
    assert meter.gpus[0].uuid == gpu_uuid(1)  # CUDA's gpu:0 is the faster A100
    assert any("mixes GPU models" in n for n in meter.notes)
    meter.close()


def test_launcher_sets_pci_order_and_warns_about_a_users_other_order(nvml_sim) -> None:
    from llem.launch.slots import order_warning, slot_env

    nvml_sim(host(["V100", "A100"], clock=SimClock()))
    assert slot_env((), {})["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "CUDA_DEVICE_ORDER" not in slot_env(("1",), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert "mixing GPU models" in (order_warning({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) or "")
    assert order_warning({}) is None


def test_cuda_visible_devices_parsing_follows_cuda(nvml_sim) -> None:
    from llem.device import nvml_session, open_gpus, resolve

    nvml_sim(host("H100", 3, clock=SimClock()))
    with nvml_session() as nv:
        gpus = open_gpus(nv)
        assert [v.gpu.nvml_index for v in resolve(nv, gpus, "1,1,0", "PCI_BUS_ID").visible] == [1, 0]
        res = resolve(nv, gpus, "1,7,0", "PCI_BUS_ID")  # CUDA ignores an invalid entry and all after it
        assert [v.gpu.nvml_index for v in res.visible] == [1] and "'7'" in res.notes[0]
        res = resolve(nv, gpus, f"{gpu_uuid(2)[:12]},GPU-deadbeef,0", "PCI_BUS_ID")
        assert [v.gpu.nvml_index for v in res.visible] == [2] and "matches no GPU UUID" in res.notes[0]
        assert "several" in resolve(nv, gpus, "GPU-0000000", "PCI_BUS_ID").notes[0]  # ambiguous prefix
        assert resolve(nv, gpus, "", "PCI_BUS_ID").visible == []


def test_health_probe_counts_and_gaps_use_the_same_identity(nvml_sim, monkeypatch) -> None:
    from llem.launch import health
    from llem.launch.slots import nvml_device_count
    from llem.study.gaps import gpu_host

    sim = nvml_sim(host(["A100", "A100"], clock=SimClock()))
    (mig,) = add_migs(sim, 1, 1)
    mig.pids = [31337]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    states, reason = health.probe(["0", mig.uuid[:12]])
    assert reason is None and [s.uuid for s in states] == [gpu_uuid(0), mig.uuid]
    assert states[1].processes[0]["pid"] == 31337 and "MIG" in states[1].name
    assert nvml_device_count() == 2 and gpu_host()
    sim.init_error = sim.NVML_ERROR_DRIVER_NOT_LOADED
    assert nvml_device_count() is None and not gpu_host()


# -- point 6: failures degrade ---------------------------------------------------------------------------------
def test_no_permission_on_the_jobs_gpu_fails_nvml_and_auto_carries_on(nvml_sim, monkeypatch, tmp_path) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock()))
    sim.gpus[1].open_error = sim.NVML_ERROR_NO_PERMISSION
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    with pytest.raises(MeterUnavailable, match=r"energy.meter=nvml: .*GPU 1.*NVMLError_NoPermission"):
        build_meters(EnergyConfig(meter="nvml"))
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path / "absent"))))
    assert [m.name for m in sel.meters] == ["none"]
    assert any(n.startswith("nvml: unavailable:") and "NoPermission" in n for n in sel.notes)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU the job does not use may be locked away
    sel = build_meters(EnergyConfig(meter="nvml"))
    assert [g.uuid for g in sel.meters[0].gpus] == [gpu_uuid(0)]
    sel.meters[0].close()


def test_gpu_lost_mid_window_is_a_warning_not_a_crash(nvml_sim) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock(), watts=[200.0, 300.0]))
    meter = sim_meter(sim)
    meter.probe()
    sim.gpus[1].lost_at = sim.clock() + 1.5
    reading, t0, t1 = window(meter, 3.0)
    by = {d.device: d for d in reading.devices}
    assert by["gpu:0"].energy_j == pytest.approx(200.0 * (t1 - t0), rel=0.01)
    text = "\n".join(reading.warnings)
    assert "gpu:1:" in text and "NVMLError_GpuIsLost" in text and "stopped answering" in text
    assert by["gpu:1"].energy_j == pytest.approx(300.0 * 1.5, rel=0.1)


def test_old_driver_library_mismatch_and_missing_v_functions_degrade(nvml_sim) -> None:
    sim = nvml_sim(host("A100", clock=SimClock(), old_driver=True))
    sim.gpus[0].reasons = 0x4
    meter = sim_meter(sim)
    meter.probe()
    att = meter.attribute()  # nvmlDeviceGetComputeRunningProcesses raises NVMLLibraryMismatchError
    assert att.method == "cuda_visible_devices" and "NVMLLibraryMismatchError" in att.reason
    # TemperatureV missing in the driver: the old call answers. gpu_sim: an idle A100 (55 W) sits at
    # 32 °C + 0.1 °C/W × 55 W = 37.5 °C, which NVML reports as the integer 37.
    assert meter.temperatures() == {"gpu:0": 37.0}
    reading, _, _ = window(meter, 1.0)
    th = vars(reading.devices[0].thermal)
    # the power-cap bit is set the whole window: 1 s of it, between the first and last of the samples on
    # the simulated clock (exact but for float rounding)
    assert th["throttle_s"] == {"sw_power_cap": pytest.approx(1.0, abs=1e-9)} and th["temperature_start_c"] == 37.0


def test_bindings_without_deprecated_functions_lose_nothing(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), removed=gpu_sim.DEPRECATED))
    sim.gpus[0].reasons = 0x40
    with pytest.raises(AttributeError):
        sim.nvmlDeviceGetTemperature  # noqa: B018  (gone, as in CUDA 14 bindings)
    meter = sim_meter(sim)
    meter.probe()
    assert meter.temperatures() == {"gpu:0": pytest.approx(32.0 + 0.1 * 70.0, abs=1)}
    reading, _, _ = window(meter, 0.5)
    # the thermal-slowdown bit is set the whole 0.5 s window (simulated clock: exact but for float rounding)
    assert reading.devices[0].thermal.throttle_s == {"hw_thermal_slowdown": pytest.approx(0.5, abs=1e-9)}


# -- the simulator itself ---------------------------------------------------------------------------------------
def test_simulated_temperature_rises_under_load_and_decays(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=70.0))
    g = sim.gpus[0]
    cold = g.temperature_at(sim.clock())
    sim.set_power(0, 700.0)
    meter = sim_meter(sim, hz=1)
    reading, t0, t1 = window(meter, 60.0)
    th = vars(reading.devices[0].thermal)
    assert th["temperature_start_c"] == pytest.approx(cold, abs=1) and th["temperature_drift_c"] > 40
    block = energy_block([reading], [], t1 - t0, 100, 1)
    assert any("temperature rose" in w for w in block["warnings"])
    sim.set_power(0, 70.0)
    sim.clock.advance(120.0)
    assert g.temperature_at(sim.clock()) < cold + 3
    c = sim.nvmlDeviceGetTotalEnergyConsumption(sim.nvmlDeviceGetHandleByIndex(0)) if sim.nvmlInit() is None else 0
    assert 0 < c < 1 << 64


def test_simulated_counter_ticks_and_mig_have_no_energy(nvml_sim) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), watts=100.0))
    add_migs(sim, 0, 1)
    sim.nvmlInit()
    h = sim.nvmlDeviceGetHandleByIndex(0)
    values = []
    for _ in range(250):
        sim.clock.advance(0.001)
        values.append(sim.nvmlDeviceGetTotalEnergyConsumption(h))
    steps = {b - a for a, b in zip(values, values[1:]) if b != a}
    assert steps == {10_000} and len(set(values)) >= 3  # 10 J (100 W × 100 ms) per tick, nothing between
    mig = sim.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    with pytest.raises(sim.NVMLError_NotSupported):
        sim.nvmlDeviceGetTotalEnergyConsumption(mig)
    assert sim.nvmlDeviceGetUUID(sim.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)) == gpu_uuid(0)
    assert os.getpid() not in {p.pid for p in sim.nvmlDeviceGetComputeRunningProcesses(h)}


# -- the user-visible scenario, end to end -------------------------------------------------------------------
def _sim_pynvml(tmp_path, body: str) -> str:
    """A folder whose `pynvml` is a simulated host (real clock), for `python -m llem` subprocesses."""
    fake = tmp_path / "fake"
    fake.mkdir(parents=True)
    from conftest import FAKES

    tests_dir = str(FAKES)  # tests/fakes: gpu_sim
    (fake / "pynvml.py").write_text(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\nimport gpu_sim\n{body}\nsys.modules[__name__] = sim\n")
    return str(fake)


@pytest.mark.slow
def test_llem_on_a_simulated_8_gpu_h100_host_reports_the_jobs_gpu(tmp_path, llem_cache) -> None:
    from conftest import read_result, run_llem

    fake = _sim_pynvml(tmp_path, "sim = gpu_sim.host('H100', 8, watts=[73.0] * 8)\nsim.gpus[3].runs_caller = True\n"
                                 "sim.set_power(3, 400.0)")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_llem(["energy=nvml", "energy.sample_hz=50", "energy.baseline_s=0", "n=2", "pytorch.max_output_tokens=16"],
                    work, llem_cache, env={"PYTHONPATH": fake})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in work.rglob("result.json")]
    r = read_result(folder)
    e = r["energy"]
    assert r["environment"]["cuda_device_order"] == "PCI_BUS_ID"  # set for the job: CUDA numbers GPUs as NVML
    assert [d["device"] for d in e["devices"]] == ["gpu:3"] and e["attribution"]["method"] == "nvml_processes"
    # the job's 400 W GPU alone (the old code said ~911 W); a window of tens of ms, where the 100 ms counter's
    # edges move the mean by a few % (accuracy on known energy: tests/unit/energy/meters/nvml/test_meter.py, < 0.4 %)
    assert e["mean_power_w"] == pytest.approx(400.0, rel=0.05)
    assert len(e["unattributed_devices"]) == 7
    # the same host, the job's GPU locked away (cgroup): energy=nvml stops before the model loads, exit 2
    fake2 = _sim_pynvml(tmp_path / "b", "sim = gpu_sim.host('H100', 2)\nsim.gpus[1].open_error = 4")
    work2 = tmp_path / "work2"
    work2.mkdir()
    proc = run_llem(["energy=nvml", "n=2"], work2, llem_cache,
                    env={"PYTHONPATH": fake2, "CUDA_VISIBLE_DEVICES": "1", "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "NVMLError_NoPermission" in proc.stderr and "Traceback" not in proc.stderr
    (folder,) = [p.parent for p in work2.rglob("result.json")]
    assert "load_s" not in read_result(folder).get("timing", {})


def test_a_gpu_nvml_cannot_open_does_not_make_a_homogeneous_host_look_mixed(nvml_sim, monkeypatch) -> None:
    sim = nvml_sim(host("H100", 4, clock=SimClock()))
    sim.gpus[0].open_error = sim.NVML_ERROR_NO_PERMISSION  # another tenant's GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # CUDA's default order: fastest first = PCI order here
    meter = sim_meter(sim)
    meter.probe()
    assert [g.uuid for g in meter.gpus] == [gpu_uuid(2)]
    meter.close()
