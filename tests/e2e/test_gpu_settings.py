"""GPU settings end to end (issue 20): real `python -m llem` subprocesses on a simulated GPU host whose driver
state (power limits, clocks, load) is a JSON file every process shares (tests/fakes/gpu_sim.py, installed as
`pynvml` by tests/fakes/sim_site): a two-limit sweep that measures the capped power and leaves the GPU as it was,
the report's energy-vs-limit plot, a missing permission refused before load, and kill -9 of the launcher
repaired by the next run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from gpu_sim import host

pytestmark = pytest.mark.slow

FAST = ["n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true", "energy=nvml",
        "energy.baseline_s=0"]
LOAD_W = 600.0  # what the simulated GPU draws while "busy" at its top clock (above every limit swept)


def sim_env(tmp: Path, cache: Path, admin: bool) -> dict[str, str]:
    state = tmp / "driver.json"
    if not state.exists():
        host("H100", 1, watts=LOAD_W, admin=admin, state_file=state)
    env = {**os.environ, "LLEM_CACHE": str(cache), "LLEM_GPU_SIM_STATE": str(state),
           "LLEM_STATE_DIR": str(tmp / "llem-state")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "fakes" / "sim_site"), str(REPO), env.get("PYTHONPATH", "")])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("HYDRA_FULL_ERROR", None)  # users' view: one line, no traceback
    return env


def driver(tmp: Path) -> dict:
    return json.loads((tmp / "driver.json").read_text())["gpus"][0]


def llem(args: list[str], tmp: Path, env: dict[str, str], module: str = "llem", timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sweep_over_two_power_limits_measures_the_cap_and_restores(tmp_path: Path, llem_cache: Path,
                                                                  tiny_model: Path) -> None:
    env = sim_env(tmp_path, llem_cache, admin=True)
    sweep = tmp_path / "sweep"
    out = llem(["-m", "gpu.power_limit_w=200,300", "study.cool.max_s=1", *FAST, f"hydra.sweep.dir={sweep}"],
               tmp_path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    results = sorted((json.loads(p.read_text()) for p in sweep.glob("*/result.json")),
                     key=lambda r: r["config"]["gpu"]["power_limit_w"])
    assert [r["status"] for r in results] == ["completed", "completed"]
    for r, limit in zip(results, (200.0, 300.0)):
        gs = r["gpu_settings"]
        assert gs["applied_by"] == "launcher" and gs["requested"]["power_limit_w"] == limit
        dev = gs["devices"][0]
        assert dev["previous"]["power_limit_w"] == 700.0 and dev["enforced"]["power_limit_w"] == limit
        measured_w = r["energy"]["gpu_j"] / r["timing"]["window_s"]
        assert measured_w == pytest.approx(limit, rel=0.05)  # the GPU asks 600 W; the limit caps it
        assert gs["seen"]["gpu:0"]["throttle_reasons"] == ["sw_power_cap"]
        assert gs["seen"]["gpu:0"]["sm_clock_mhz_mean"] < 1980
    assert "cool" in results[0]["gpu_settings"] or "cool" in results[1]["gpu_settings"]  # adaptive gap before job 2
    assert driver(tmp_path)["power_limit_mw"] == 700_000  # left as it was
    assert not list((tmp_path / "llem-state" / "gpu-settings").glob("*.json"))  # records deleted

    rep = llem([str(sweep)], tmp_path, env, module="llem.report")
    assert rep.returncode == 0, rep.stderr
    page = (sweep / "report" / "report.md").read_text()
    assert "![Energy and throughput vs GPU power limit (W)" in page and "(gpu_power_limit_w.png)" in page
    assert (sweep / "report" / "gpu_power_limit_w.png").stat().st_size > 1000
    # the answer names the setting with the lowest J/token of the results (CPU speed varies on a shared host)
    best = min(results, key=lambda r: r["energy"]["j_per_output_token"])["config"]["gpu"]["power_limit_w"]
    assert f"lowest J/token (offline: no SLO): gpu.power_limit_w={best:g} " in page


def test_missing_permission_exits_2_before_load(tmp_path: Path, llem_cache: Path, tiny_model: Path) -> None:
    env = sim_env(tmp_path, llem_cache, admin=False)
    run = llem(["gpu.power_limit_w=300", *FAST, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env)
    assert run.returncode == 2, run.stderr
    lines = [x for x in run.stderr.splitlines() if x.startswith("llem:")]
    assert len(lines) == 1 and "GPU 0" in lines[0] and "needs root (NVML NO_PERMISSION" in lines[0]
    assert "Traceback" not in run.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "load_s" not in result["timing"]  # the model never loaded

    sweep = tmp_path / "sweep"
    study = llem(["-m", "gpu.power_limit_w=200,300", *FAST, f"hydra.sweep.dir={sweep}"], tmp_path, env)
    assert study.returncode == 2, study.stdout + study.stderr
    assert "needs root (NVML NO_PERMISSION" in study.stderr and "Traceback" not in study.stderr
    assert not list(sweep.glob("*/result.json"))  # found at planning: no job ran
    out_of_range = llem(["-m", "gpu.power_limit_w=100,300", *FAST, f"hydra.sweep.dir={tmp_path / 's2'}"],
                        tmp_path, env)
    assert out_of_range.returncode == 2
    assert "gpu.power_limit_w=100 is out of range for GPU 0 (NVIDIA H100 80GB HBM3" in out_of_range.stderr
    assert "allowed 200 to 700 W" in out_of_range.stderr
    assert driver(tmp_path)["power_limit_mw"] == 700_000


def test_kill_9_of_the_launcher_is_repaired_by_the_next_run(tmp_path: Path, llem_cache: Path,
                                                            tiny_model: Path) -> None:
    env = sim_env(tmp_path, llem_cache, admin=True)
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "llem", "-m", "gpu.power_limit_w=250,260", "debug.fault=sleep",
                             "debug.sleep_s=120", "study.gaps=false", *FAST, f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while driver(tmp_path)["power_limit_mw"] != 250_000:
            assert proc.poll() is None and time.monotonic() < deadline, "the limit was never applied"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # llem itself, with the limit applied
        proc.wait()
        assert driver(tmp_path)["power_limit_mw"] == 250_000  # nobody put it back
        status = llem(["status"], tmp_path, env, module="llem.gpu")
        assert f"llem pid {proc.pid} [GONE" in status.stdout and "power limit was 700 W" in status.stdout
        nxt = llem(["--cfg", "job"], tmp_path, env)  # any next llem run on the host
        assert nxt.returncode == 0, nxt.stderr
        lines = [x for x in nxt.stderr.splitlines() if x.startswith("llem:")]
        assert len(lines) == 1 and lines[0].startswith(f"llem: restored GPU settings left by llem pid {proc.pid}")
        assert "power limit back to 700 W" in lines[0]
        assert driver(tmp_path)["power_limit_mw"] == 700_000
        again = llem(["--cfg", "job"], tmp_path, env)
        assert "restored" not in again.stderr  # said once

        single = llem(["gpu.power_limit_w=280", *FAST, f"hydra.run.dir={tmp_path / 'single'}"], tmp_path, env)
        assert single.returncode == 0, single.stderr  # a single run (no launcher) applies and restores itself
        gs = json.loads((tmp_path / "single" / "result.json").read_text())["gpu_settings"]
        assert gs["applied_by"] == "job" and gs["restored"] and gs["enforced_power_limit_w"] == {"0": 280.0}
        assert gs["seen"]["gpu:0"]["power_w_mean"] == pytest.approx(280.0, rel=0.02)
        assert driver(tmp_path)["power_limit_mw"] == 700_000
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned job and zygote (this test's own process group)
