"""Adaptive thermal gaps (issue 20): the study waits until the job's GPUs are back within study.cool.temp_c of
the idle temperature and study.cool.power_w of the idle power, bounded by study.cool.max_s — on the GPU
simulator's cooling curve (first-order temperature, decaying leakage power) read through llem.device."""

from __future__ import annotations

import json

import pytest
from gpu_sim import SimClock, host

from llem.config.schema import CoolConfig, StudyConfig
from llem.gpu import cool as cool_mod
from llem.gpu.job import COOL_ENV
from llem.gpu.launch import GpuKeeper
from llem.study.gaps import Gaps, resolve_gaps

IDLE_W, LOAD_W = 70.0, 600.0


def test_gaps_settings() -> None:
    assert resolve_gaps(StudyConfig(), gpu_host=True).adaptive
    assert not resolve_gaps(StudyConfig(), gpu_host=False).adaptive  # CPU host: nothing to cool
    assert resolve_gaps(StudyConfig(gaps="adaptive"), gpu_host=True).cool == CoolConfig()
    assert resolve_gaps(StudyConfig(gaps="fixed"), gpu_host=True) == Gaps(60.0, 300.0)
    assert resolve_gaps(StudyConfig(config_gap_seconds=5), gpu_host=True) == Gaps(5.0, 300.0)  # a set gap: fixed
    assert resolve_gaps(StudyConfig(gaps=False), gpu_host=True) == Gaps(0.0, 0.0)


def test_bad_gap_settings_are_named() -> None:
    from llem.config.schema import ExperimentConfig
    from llem.config.validate import problems

    cfg = ExperimentConfig()
    cfg.study.gaps = "sometimes"
    cfg.study.cool.temp_c = -1
    cfg.study.cool.poll_s = 0
    keys = {p[0] for p in problems(cfg)}
    assert {"study.gaps", "study.cool.temp_c", "study.cool.poll_s"} <= keys


def _after_a_job(nvml_sim, job_s: float = 60.0) -> tuple[object, SimClock, cool_mod.Reading]:
    clock = SimClock()
    sim = nvml_sim(host("H100", clock=clock, watts=IDLE_W, power_tau_s=5.0, thermal_tau_s=10.0))
    idle = cool_mod.read_gpus(None)
    sim.set_power(0, LOAD_W)
    clock.advance(job_s)
    sim.set_power(0, IDLE_W)
    return sim, clock, idle


def _truth_s(g: object, t0: float, idle: tuple[float, float], c: cool_mod.Cool) -> float:
    """The first instant (1 ms grid) at which the simulated GPU reads within the bounds, as NVML reports it
    (temperature in whole °C)."""
    t = t0
    while int(g.temperature_at(t)) > idle[0] + c.temp_c or g.power_at(t) > idle[1] + c.power_w:  # type: ignore[attr-defined]
        t += 0.001
    return t - t0


def test_wait_ends_when_the_gpu_is_back_near_idle(nvml_sim) -> None:
    sim, clock, idle = _after_a_job(nvml_sim)
    (uuid, ref), = idle.items()
    assert ref == (int(32 + 0.1 * IDLE_W), IDLE_W)  # ambient + c_per_w × idle power, as NVML rounds
    c = cool_mod.Cool(temp_c=3.0, power_w=10.0, max_s=600.0, poll_s=0.5)
    truth = _truth_s(sim.gpus[0], clock(), ref, c)
    assert 10.0 < truth < 60.0  # a real wait: neither immediate nor the bound
    got = cool_mod.wait_cool(lambda: cool_mod.read_gpus(None), idle, c, clock, clock.advance)
    assert got["cooled"] and truth <= got["wait_s"] < truth + c.poll_s + 1e-9
    assert got["start_temperature_c"][uuid] <= ref[0] + 3.0
    assert got["start_power_w"][uuid] <= ref[1] + 10.0


def test_power_bound_alone_can_hold_the_job(nvml_sim) -> None:
    sim, clock, idle = _after_a_job(nvml_sim)
    loose_temp = cool_mod.Cool(temp_c=100.0, power_w=10.0, max_s=600.0, poll_s=0.1)
    got = cool_mod.wait_cool(lambda: cool_mod.read_gpus(None), idle, loose_temp, clock, clock.advance)
    # leakage 530 W × e^(-t/5 s) falls under 10 W after 5 × ln(53) = 19.85 s
    assert got["wait_s"] == pytest.approx(5.0 * __import__("math").log(53.0), abs=0.11)


def test_a_gpu_that_never_cools_is_waited_for_at_most_max_s(nvml_sim) -> None:
    sim, clock, idle = _after_a_job(nvml_sim)
    sim.set_power(0, LOAD_W)  # another tenant keeps it busy
    c = cool_mod.Cool(max_s=30.0, poll_s=1.0)
    got = cool_mod.wait_cool(lambda: cool_mod.read_gpus(None), idle, c, clock, clock.advance)
    assert got["wait_s"] == pytest.approx(30.0) and not got["cooled"]


def test_launcher_keeper_holds_the_next_job_then_passes_the_wait_to_it(nvml_sim, monkeypatch) -> None:
    sim, clock, _ = _after_a_job(nvml_sim, job_s=0.0)
    sim.set_power(0, IDLE_W)
    clock.advance(600)
    keeper = GpuKeeper(Gaps(0.0, 0.0, adaptive=True, cool=CoolConfig(max_s=300.0)))
    keeper.study_start([()])  # idle reference, before the first job
    sim.set_power(0, LOAD_W)
    clock.advance(60)
    sim.set_power(0, IDLE_W)  # job 1 ended now
    now = [0.0]
    monkeypatch.setattr("llem.gpu.launch.time.monotonic", lambda: now[0])
    ready, label = keeper.ready((), free_at=0.0)
    assert not ready and "°C" in label and " W" in label  # the countdown shows temperature and power
    clock.advance(120)
    now[0] = 120.0
    ready, _ = keeper.ready((), free_at=0.0)
    assert ready
    env = keeper.before(2, None, (), "test")
    info = json.loads(env[COOL_ENV])
    assert info["wait_s"] == 120.0 and info["cooled"] and info["mode"] == "adaptive"


def test_a_cooling_wait_in_a_log_prints_one_line_per_30_s(monkeypatch) -> None:
    import io

    out = io.StringIO()
    keeper = GpuKeeper(Gaps(0.0, 0.0, adaptive=True, cool=CoolConfig()), out)
    now = [100.0]
    monkeypatch.setattr("llem.gpu.launch.time.monotonic", lambda: now[0])
    monkeypatch.setattr("llem.gpu.launch.time.sleep", lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(61):  # a minute of 1-s polls
        keeper.countdown(1.0, cool_mod.COOLING + " (now/idle): 50/39 °C 90/70 W")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0] == "[llem] cooling to idle (now/idle): 50/39 °C 90/70 W"


def test_bench_gaps_runs_and_every_adaptive_job_starts_cool(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "gaps.json"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_gaps.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert doc["benchmark"] == "gaps" and row["unit"] == "ratio" and 0 < row["value"] < 1
    data = doc["data"]["tau_20"]
    adaptive, fixed = data["adaptive"], data["fixed"]
    assert fixed["gaps_s"] == 4 * 300 + 15 * 60  # 4 cycle gaps and 15 config gaps of a 4 x 5 interleaved study
    assert max(adaptive["start_temperature_c"]) <= adaptive["idle_temperature_c"] + 3.0
