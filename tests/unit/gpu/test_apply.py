"""GPU settings (issue 20), fast: the simulator's driver state, checks, apply → restore, restore records, the
repair of a killed llem's record, `python -m llem.gpu`, config checks and hashes, clocks seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from gpu_sim import REAL, SimClock, from_state, host

from llem.gpu import records
from llem.gpu.apply import GpuSettingsError, Request, apply, check, repair_stale, request_of, restore_applied


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(records.STATE_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def _handle(sim: Any, i: int = 0) -> Any:
    sim.nvmlInit()
    return sim.nvmlDeviceGetHandleByIndex(i)


# -- the simulator -------------------------------------------------------------------------------------
def test_sim_setters_need_root_and_respect_constraints() -> None:
    sim = host("H100", clock=SimClock())
    h = _handle(sim)
    with pytest.raises(REAL.NVMLError_NoPermission):
        sim.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    with pytest.raises(REAL.NVMLError_NoPermission):
        sim.nvmlDeviceSetGpuLockedClocks(h, 900, 900)
    sim.admin = True
    assert sim.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 700_000]
    with pytest.raises(REAL.NVMLError_InvalidArgument):
        sim.nvmlDeviceSetPowerManagementLimit(h, 100_000)
    sim.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    assert sim.nvmlDeviceGetPowerManagementLimit(h) == sim.nvmlDeviceGetEnforcedPowerLimit(h) == 300_000


def test_sim_power_is_capped_by_the_limit_and_the_clock_drops() -> None:
    clock = SimClock()
    sim = host("H100", clock=clock, watts=600.0, admin=True)
    h = _handle(sim)
    assert sim.nvmlDeviceGetFieldValues(h, [REAL.NVML_FI_DEV_POWER_INSTANT])[0].value.uiVal == 600_000
    assert sim.nvmlDeviceGetClockInfo(h, REAL.NVML_CLOCK_SM) == 1980
    sim.nvmlDeviceSetPowerManagementLimit(h, 250_000)
    clock.advance(2.0)
    assert sim.nvmlDeviceGetFieldValues(h, [REAL.NVML_FI_DEV_POWER_INSTANT])[0].value.uiVal == 250_000
    assert sim.nvmlDeviceGetPowerUsage(h) == 250_000  # the 1-s average, after a second at the cap
    assert sim.nvmlDeviceGetClockInfo(h, REAL.NVML_CLOCK_SM) < 1980
    assert sim.nvmlDeviceGetCurrentClocksEventReasons(h) & 0x4  # sw_power_cap
    e0 = sim.nvmlDeviceGetTotalEnergyConsumption(h)
    clock.advance(10.0)
    assert sim.nvmlDeviceGetTotalEnergyConsumption(h) - e0 == pytest.approx(2_500_000, abs=30_000)  # 10 s × 250 W


def test_sim_energy_per_token_is_u_shaped_in_the_sm_clock() -> None:
    g = host("H100", clock=SimClock()).gpus[0]
    clocks = [345, 600, 900, 1200, 1500, 1980]
    jpt = []
    for f in clocks:
        f_run, watts = g.operating_point(600.0, 700.0, f)
        jpt.append(watts / f_run)  # throughput ∝ clock: J/token ∝ W / MHz
    best = jpt.index(min(jpt))
    assert 0 < best < len(clocks) - 1  # a minimum inside: both ends cost more
    assert jpt[0] > jpt[best] and jpt[-1] > jpt[best]


def test_sim_driver_state_is_shared_across_processes(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    sim = host("H100", 2, admin=True, state_file=state)
    h = _handle(sim, 1)
    sim.nvmlDeviceSetPowerManagementLimit(h, 350_000)
    code = ("import pynvml as n; n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(1); "
            "print(n.nvmlDeviceGetPowerManagementLimit(h)); n.nvmlDeviceSetPowerManagementLimit(h, 400000)")
    env = {**os.environ, "LLEM_GPU_SIM_STATE": str(state),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fakes" / "sim_site"), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "350000"
    assert sim.nvmlDeviceGetPowerManagementLimit(h) == 400_000  # the other process's change, seen here
    assert from_state(str(state)).gpus[1].power_limit_mw == 400_000


# -- checks, apply, restore ----------------------------------------------------------------------------
def test_out_of_range_and_unsupported_clocks_are_named(nvml_sim) -> None:
    nvml_sim(host("H100", 2, clock=SimClock(), admin=True))
    from llem.gpu.apply import job_gpus

    with job_gpus(["1"]) as gpus:
        assert [g.index for g in gpus] == [1]
        problems = check(Request(power_limit_w=150.0, sm_clock_mhz=(300, 2100), mem_clock_mhz=(1000, 1000)), gpus)
    assert problems[0].startswith("gpu.power_limit_w=150 is out of range for GPU 1 (NVIDIA H100")
    assert "allowed 200 to 700 W" in problems[0]
    assert "gpu.sm_clock_mhz=[300,2100]" in problems[1] and "allowed 345 to 1980 MHz" in problems[1]
    assert "gpu.mem_clock_mhz=1000" in problems[2] and "2619, 1593" in problems[2]
    with job_gpus(["1"]) as gpus:  # the edges are allowed
        assert check(Request(power_limit_w=200.0, sm_clock_mhz=(345, 1980), mem_clock_mhz=(1593, 1593)), gpus) == []


def test_without_root_nothing_is_changed_and_the_line_names_the_permission(nvml_sim, state_dir: Path) -> None:
    sim = nvml_sim(host("H100", clock=SimClock()))
    with pytest.raises(GpuSettingsError) as e:
        apply(Request(power_limit_w=300.0))
    assert "GPU 0" in str(e.value) and "needs root (NVML NO_PERMISSION" in str(e.value)
    assert sim.gpus[0].power_limit_mw == 700_000
    assert records.on_this_host() == []  # nothing recorded: nothing changed


def test_apply_records_then_restore_puts_everything_back(nvml_sim, state_dir: Path) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock(), admin=True, watts=600.0))
    sim.gpus[0].power_limit_mw = 650_000  # a host whose admin set 650 W: that, not the default, comes back
    applied = apply(Request(power_limit_w=300.0, sm_clock_mhz=(900, 1200), persistence="on"), ["0"], "test")
    (path, rec), = records.on_this_host()
    assert path == applied.record and rec["pid"] == os.getpid()
    assert rec["gpus"][0]["previous"]["power_limit_w"] == 650.0 and rec["gpus"][0]["uuid"] == sim.gpus[0].uuid
    assert len(rec["gpus"]) == 1  # only the job's GPU
    g0, g1 = sim.gpus
    assert (g0.power_limit_mw, g0.locked_sm, g1.power_limit_mw) == (300_000, (900, 1200), 700_000)
    dev = applied.devices[0]
    assert dev["enforced"]["power_limit_w"] == 300.0 and dev["requested"]["power_limit_w"] == 300.0
    assert restore_applied(applied) == []
    assert (g0.power_limit_mw, g0.locked_sm, g0.persistence) == (650_000, None, 1)
    assert records.on_this_host() == []


def test_enforced_limit_different_from_requested_is_a_warning(nvml_sim, state_dir: Path, monkeypatch) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), admin=True))
    real = sim.nvmlDeviceGetEnforcedPowerLimit
    monkeypatch.setattr(sim, "nvmlDeviceGetEnforcedPowerLimit", lambda h: real(h) - 20_000)  # another cap binds
    applied = apply(Request(power_limit_w=300.0))
    assert applied.warnings == [f"GPU 0 (NVIDIA H100 80GB HBM3, {sim.gpus[0].uuid}): enforced power limit 280 W "
                                "differs from the requested gpu.power_limit_w=300 W"]
    restore_applied(applied)


def test_a_gpu_held_by_another_live_llem_is_refused(nvml_sim, state_dir: Path) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), admin=True))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rec = records.new_record([{"uuid": sim.gpus[0].uuid, "index": 0, "previous": {"power_limit_w": 700.0},
                                   "changed": ["power_limit"]}], "study A")
        rec.update(pid=other.pid, pid_start=records.process_start(other.pid))
        records.write(rec)
        with pytest.raises(GpuSettingsError, match=r"held by another llem run \(pid \d+, study A"):
            apply(Request(power_limit_w=300.0))
        assert repair_stale() == 0  # alive: left alone
    finally:
        other.kill()
        other.wait()
    assert sim.gpus[0].power_limit_mw == 700_000


def test_a_dead_llems_record_is_repaired_with_one_line(nvml_sim, state_dir: Path, capsys) -> None:
    sim = nvml_sim(host("H100", clock=SimClock(), admin=True))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sim.gpus[0].power_limit_mw = 250_000  # what the killed llem left
    sim.gpus[0].locked_sm = (900, 900)
    rec = records.new_record([{"uuid": sim.gpus[0].uuid, "index": 0, "previous": {"power_limit_w": 700.0},
                               "changed": ["power_limit", "sm_clocks"]}], "study B")
    rec.update(pid=dead.pid, pid_start=1.0)
    records.write(rec)
    assert repair_stale() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"llem: restored GPU settings left by llem pid {dead.pid}")
    assert "power limit back to 700 W" in err[0]
    assert (sim.gpus[0].power_limit_mw, sim.gpus[0].locked_sm) == (700_000, None)
    assert records.on_this_host() == [] and repair_stale() == 0


def test_cli_status_and_restore(nvml_sim, state_dir: Path, capsys) -> None:
    from llem.gpu.__main__ import main

    sim = nvml_sim(host("H100", clock=SimClock(), admin=True))
    assert main(["status"]) == 0 and "no GPU settings changed" in capsys.readouterr().out
    applied = apply(Request(power_limit_w=420.0), None, "my study")
    main(["status"])
    out = capsys.readouterr().out
    assert "[running]" in out and "my study" in out and "power limit was 700 W" in out
    assert main(["restore"]) == 0 and sim.gpus[0].power_limit_mw == 420_000  # alive: left alone
    assert main(["restore", "--all"]) == 0 and sim.gpus[0].power_limit_mw == 700_000
    assert not applied.record.exists()


# -- config ---------------------------------------------------------------------------------------------
def test_request_of_config_values() -> None:
    assert request_of({"power_limit_w": 300, "sm_clock_mhz": 1500, "mem_clock_mhz": None,
                       "persistence": "leave"}) == Request(300.0, (1500, 1500), None, "leave")
    assert request_of({"sm_clock_mhz": [900, 1400]}).sm_clock_mhz == (900, 1400)
    assert request_of(None).empty and request_of({"persistence": "leave"}).empty
    assert not request_of({"persistence": "on"}).empty


@pytest.mark.parametrize("key,value,allowed", [
    ("power_limit_w", 0, "positive number of watts"),
    ("power_limit_w", True, "positive number of watts"),
    ("sm_clock_mhz", [1500, 900], "[min, max] with 0 < min <= max"),
    ("sm_clock_mhz", [1, 2, 3], "[min, max]"),
    ("sm_clock_mhz", "fast", "null, a positive number"),
    ("mem_clock_mhz", [1593, 2619], "one supported memory clock"),
    ("persistence", "off", "leave, on"),
])
def test_bad_gpu_values_are_named(key: str, value: Any, allowed: str) -> None:
    from llem.config.schema import ExperimentConfig
    from llem.config.validate import problems

    cfg = ExperimentConfig()
    setattr(cfg.gpu, key, value)
    found = [p for p in problems(cfg) if p[0] == f"gpu.{key}"]
    assert len(found) == 1 and allowed in found[0][2]


def test_gpu_settings_enter_the_config_hash_only_when_set() -> None:
    from dataclasses import asdict

    from llem.config.schema import ExperimentConfig
    from llem.study.hashing import config_hash

    base = asdict(ExperimentConfig())
    without = {k: v for k, v in base.items() if k != "gpu"}
    assert config_hash(base) == config_hash(without)  # defaults: hashes as before gpu.* existed
    h200 = config_hash({**base, "gpu": {**base["gpu"], "power_limit_w": 200.0}})
    h300 = config_hash({**base, "gpu": {**base["gpu"], "power_limit_w": 300.0}})
    assert len({config_hash(base), h200, h300}) == 3


def test_clocks_seen_from_the_timeseries() -> None:
    from llem.gpu.job import clocks_seen

    rows = [{"device": "gpu:0", "sm_clock_mhz": 1000, "mem_clock_mhz": 2619, "power_w": 250.0,
             "temperature_c": 60, "clock_event_reasons": 0},
            {"device": "gpu:0", "sm_clock_mhz": 1400, "mem_clock_mhz": 2619, "power_w": 250.0,
             "temperature_c": 62, "clock_event_reasons": 0x4},
            {"device": "gpu:1", "sm_clock_mhz": None, "clock_event_reasons": None}]
    seen = clocks_seen(rows)
    assert seen["gpu:0"]["sm_clock_mhz_mean"] == 1200 and seen["gpu:0"]["throttle_reasons"] == ["sw_power_cap"]
    assert seen["gpu:1"]["sm_clock_mhz_mean"] is None and seen["gpu:1"]["throttle_reasons"] == []


def test_record_is_valid_json_with_host_and_pid(state_dir: Path) -> None:
    path = records.write(records.new_record([], "x"))
    rec = json.loads(path.read_text())
    assert rec["host"] and rec["pid"] == os.getpid() and rec["pid_start"] and records.alive(rec)


# -- scripts/gpu_check.py's power-limit step, on the simulator ------------------------------------------
def _gpu_check() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize("admin", [True, False])
def test_gpu_check_sweeps_two_limits_and_restores(nvml_sim, state_dir: Path, admin: bool) -> None:
    gc = _gpu_check()
    clock = SimClock()
    sim = nvml_sim(host("H100", clock=clock, watts=70.0, admin=admin))
    h = _handle(sim)
    got = gc.power_limit_sweep(sim, h, sim.gpus[0].uuid, lambda busy: sim.set_power(0, 600.0 if busy else 70.0),
                               clock=clock, sleep=clock.sleep)
    assert got["restored"] and got["limit_after_w"] == got["limit_before_w"] == 700.0
    if not admin:
        assert "needs root" in got["skipped"] and got["limits"] == []
        return
    assert [x["limit_w"] for x in got["limits"]] == [367, 533]  # a third and two thirds of 200..700 W
    for x in got["limits"]:
        cap = min(x["limit_w"], 600.0)  # the load asks 600 W: each limit caps it
        assert x["enforced_w"] == x["limit_w"] and x["instant_w_mean"] == pytest.approx(cap, abs=1)
        assert x["counter_w"] == pytest.approx(cap, rel=0.03) and x["restore_failed"] == []
    assert records.on_this_host() == []


# -- the report's answer -----------------------------------------------------------------------------------
def test_lowest_j_per_token_within_the_slo_skips_settings_that_miss_it() -> None:
    import pandas as pd

    from llem.report.settings_plot import best_within_slo

    per = pd.DataFrame({"power_limit_w": [200.0, 300.0, 400.0], "j_per_token": [0.5, 0.6, 0.8],
                        "output_tok_s": [80.0, 95.0, 100.0], "ttft_p90_s": [0.30, 0.15, 0.10],
                        "tpot_p90_s": [0.05, 0.05, 0.04], "serving": [True] * 3, "slo_ttft_s": [0.2] * 3,
                        "slo_tpot_s": [0.05] * 3})
    assert best_within_slo(per, "power_limit_w").startswith(
        "lowest J/token within the SLO (TTFT p90 and TPOT p90): gpu.power_limit_w=300 (0.6 J/output token")
    per["slo_ttft_s"] = 0.05
    assert "none" in best_within_slo(per, "power_limit_w")
    offline = per.assign(serving=False)
    assert "gpu.power_limit_w=200 " in best_within_slo(offline, "power_limit_w")


def test_a_reused_pid_is_not_the_process_that_applied_the_settings() -> None:
    rec = records.new_record([], "x")
    assert records.alive(rec)
    assert not records.alive({**rec, "pid_start": rec["pid_start"] - 3600})  # same pid, another process
    assert not records.alive({**rec, "pid": None})


def test_serving_sweep_plot_has_latency_panel_and_names_the_setting(tmp_path: Path) -> None:
    import pandas as pd

    from llem.report.settings_plot import TPOT_P90, TTFT_P90, figures
    from llem.results import J_PER_TOKEN, THROUGHPUT

    rows = []
    for i, (limit, jpt, ttft) in enumerate([(250, 0.4, 0.5), (350, 0.5, 0.15), (450, 0.7, 0.1)]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"config": {"gpu": {"power_limit_w": limit}}, "gpu_settings": {},
                                                   "serving": {"slo": {"ttft_s": 0.2, "tpot_s": 0.05}}}))
        rows.append({"status": "completed", "job_dir": str(d), J_PER_TOKEN: jpt, THROUGHPUT: 100.0 + limit / 10,
                     TTFT_P90: ttft, TPOT_P90: 0.03})
    (title, name, path), = figures(pd.DataFrame(rows), tmp_path)
    assert name == "gpu_power_limit_w" and isinstance(path, Path) and path.stat().st_size > 1000
    assert "gpu.power_limit_w=350 (0.5 J/output token" in title  # 250 W is cheaper but misses the TTFT SLO
    assert figures(pd.DataFrame(rows[:1]), tmp_path) == []  # one setting: no sweep, no figure


# -- the launcher: applied before each job, restored after it whatever ends it -----------------------------
def _job_records_settings(job_dir: str, fate: str = "ok") -> None:
    """A stand-in job (forked by the launcher): writes what the launcher passed it, then ends as told."""
    import signal as _signal

    ident = {"pid": os.getpid()}
    Path(job_dir, "result.json").write_text(json.dumps({
        "status": "running" if fate == "kill" else "completed", "identity": ident, "gpu": json.loads(os.environ.get("LLEM_GPU_SETTINGS", "null"))}))
    if fate == "kill":
        os.kill(os.getpid(), _signal.SIGKILL)


def test_launcher_applies_per_job_restores_after_a_kill_and_skips_a_held_gpu(nvml_sim, state_dir: Path,
                                                                          tmp_path: Path) -> None:
    import cloudpickle

    from llem.launch.settings import LaunchSettings
    from llem.launch.supervisor import JobPlan, Supervisor
    from llem.launch.zygote import ForkServer
    from llem.study import manifest
    from llem.study.gaps import Gaps
    from llem.study.hooks import ManifestLedger

    sim = nvml_sim(host("H100", clock=SimClock(), admin=True))
    jobs = [({"power_limit_w": 300.0}, "ok"), ({"power_limit_w": 350.0}, "kill"), ({"power_limit_w": 400.0}, "ok"),
            (None, "ok")]
    seen_during: list[int] = []

    def prep(i: int, gpu: Any, fate: str) -> Any:
        def make() -> JobPlan:
            seen_during.append(sim.gpus[0].power_limit_mw)  # before job i: the previous job's limit is back
            if i == 2:  # another llem run takes the GPU between planning and job 2
                rec = records.new_record([{"uuid": sim.gpus[0].uuid, "index": 0, "previous": {}, "changed": []}], "B")
                rec.update(pid=other.pid, pid_start=records.process_start(other.pid))
                records.write(rec)
            d = tmp_path / "jobs" / str(i)
            return JobPlan(i, i, 0, d, f"job{i}", cloudpickle.dumps((_job_records_settings, (str(d), fate), {})),
                           {"job_index": i}, gpu=gpu)
        return make

    manifest.write(tmp_path, manifest.new("d" * 16, [{"index": i, "status": "planned"} for i in range(len(jobs))]))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the forked jobs cannot import tests/
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = ForkServer(preload=("cloudpickle", "psutil")).start()
    try:
        sup = Supervisor(LaunchSettings(), tmp_path, [()], Gaps(0, 0), fork_server=server,
                         probe=lambda refs: ([], None), ledger=ManifestLedger(tmp_path))
        done = sup.run([prep(i, g, f) for i, (g, f) in enumerate(jobs)])
    finally:
        server.close()
        other.kill()
        other.wait()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    by_index = {f.index: f.outcome for f in done}
    assert by_index[0].status == "completed" and by_index[1].status == "failed"  # killed
    assert by_index[2].reason == "gpu_settings" and "held by another llem run" in by_index[2].error["message"]
    assert by_index[3].status == "completed"  # the study went on
    res0 = json.loads((tmp_path / "jobs" / "0" / "result.json").read_text())
    assert res0["gpu"]["devices"][0]["enforced"]["power_limit_w"] == 300.0
    assert seen_during == [700_000, 700_000, 700_000, 700_000]  # restored after the completed and the killed job
    assert sim.gpus[0].power_limit_mw == 700_000
    assert [rec["owner"] for _, rec in records.on_this_host()] == ["B"]  # ours are gone; B's is B's business
    assert manifest.load(tmp_path)["jobs"][2]["status"] == "failed"


def test_a_job_on_a_mig_instance_may_not_change_the_shared_gpu(nvml_sim, state_dir: Path) -> None:
    from gpu_sim import add_migs

    sim = nvml_sim(host("H100", 2, clock=SimClock(), admin=True))
    mig = add_migs(sim, 1)[0]
    with pytest.raises(GpuSettingsError, match=r"GPU 1 .* is split into MIG instances"):
        apply(Request(power_limit_w=300.0), [mig.uuid])
    assert sim.gpus[1].power_limit_mw == 700_000
    applied = apply(Request(power_limit_w=300.0), ["0"])  # the whole GPU next to it: fine
    assert sim.gpus[0].power_limit_mw == 300_000
    restore_applied(applied)
