"""scripts/gpu_check.py without a GPU: its dry run, its refusal, and its measurement code run against
the GPU simulator (tests/fakes/gpu_sim.py: H100 with 100 ms counter ticks and a 1 s averaged GetPowerUsage)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gpu_sim import SimClock, host

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _module()
IDLE, BUSY = 70.0, 400.0


@pytest.fixture
def sim():
    clock = SimClock()
    nv = host("H100", 1, clock=clock, watts=IDLE, counter_period_s=0.1)
    nv.nvmlInit()
    state = {"busy": False}

    def set_load(busy: bool) -> None:  # like MatmulLoad.set: the GPU's power follows the load
        if busy != state["busy"]:
            state["busy"] = busy
            nv.set_power(0, BUSY if busy else IDLE)

    return nv, nv.nvmlDeviceGetHandleByIndex(0), clock, set_load


def test_counter_step_is_measured(sim) -> None:
    nv, h, clock, set_load = sim
    set_load(True)
    got = gc.counter_step(nv, h, 3.0, clock=clock, sleep=clock.sleep)
    assert got["supported"] and got["step_s"] == pytest.approx(0.1, abs=0.003)
    assert got["changes"] == pytest.approx(30, abs=1)


def test_instant_power_follows_the_load_and_the_averaged_one_lags(sim) -> None:
    nv, h, clock, set_load = sim
    t0 = clock()
    rows = gc.sample(nv, h, 10.0, 100, clock=clock, sleep=clock.sleep, during=lambda e: set_load(3.0 <= e < 7.0))
    resp = gc.step_response(rows, t0 + 3.0, t0 + 7.0)
    inst, avg = resp["instant_w"], resp["avg_w"]
    assert inst["idle_w"] == pytest.approx(IDLE) and inst["busy_w"] == pytest.approx(BUSY)
    assert inst["rise_90_s"] < 0.02 and inst["fall_90_s"] < 0.02
    assert 0.8 < avg["rise_90_s"] < 1.0 and 0.8 < avg["fall_90_s"] < 1.0  # Hopper: a 1 s average


@pytest.mark.parametrize("seconds", [10.0, 60.0])
def test_counter_and_sampled_integral_agree_on_a_varying_load(sim, seconds: float) -> None:
    nv, h, clock, set_load = sim
    rows = gc.sample(nv, h, seconds, 100, clock=clock, sleep=clock.sleep,
                     during=gc.square_wave(0.7, 0.5, set_load))
    got = gc.integral_vs_counter(rows)
    assert got["counter_j"] == pytest.approx(got["span_s"] * (0.7 * BUSY + 0.5 * IDLE) / 1.2, rel=0.03)
    assert abs(got["instant_w_vs_counter_pct"]) < 1.0
    assert abs(got["avg_w_vs_counter_pct"]) > abs(got["instant_w_vs_counter_pct"])  # averaging smears


def test_idle_summary_by_source(sim) -> None:
    nv, h, clock, _ = sim
    got = gc.idle_summary(gc.sample(nv, h, 5.0, 20, clock=clock, sleep=clock.sleep))
    assert got["avg_w_mean"] == pytest.approx(IDLE) and got["instant_w_mean"] == pytest.approx(IDLE)
    assert got["counter_w"] == pytest.approx(IDLE, rel=0.01)


def test_no_gpu_exits_2_before_building_anything(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "CI": "true"}
    got = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env,
                         stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert got.returncode == 2 and "no NVIDIA GPU" in got.stderr and "Traceback" not in got.stderr
    assert not list((ROOT / "benchmarks" / "results").glob(f"gpu-check-*-{socket.gethostname()}.json"))


@pytest.mark.slow
def test_dry_run_builds_the_architecture_and_composes_the_jobs(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CI": "true", "LLEM_CACHE": str(tmp_path / "c")}
    got = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--json", str(out)], capture_output=True,
                         text=True, timeout=300, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    doc = json.loads(out.read_text())
    assert doc["ok"] and doc["errors"] == []
    assert doc["steps"]["meta_model"]["data"] == gc.PARAMS_EXPECTED  # Qwen2.5-0.5B: 494 M with tied embeddings
    assert doc["plan_required_s"] <= doc["budget_s"] <= 8 * 60 - 30  # fits 8 minutes with start-up and grace
    jobs = doc["steps"]["compose_jobs"]["data"]
    assert jobs["pytorch_nvml"]["precision"] == "bf16" and jobs["vllm"]["backend"] == "vllm"


def test_shipped_config_is_qwen25_05b() -> None:
    cfg = json.loads((ROOT / "llem/models/configs/qwen2.5-0.5b/config.json").read_text())
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == (
        896, 4864, 24, 14, 2, 151936, True)


@pytest.mark.slow
def test_on_a_simulated_gpu_host_with_a_cpu_torch_it_records_the_idle_step_then_exits_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML answers (the simulator), torch has no CUDA: the first step (idle before any context) is in
    the JSON with the simulated GPU's idle power, then the check stops with exit 2; no watchdog left."""
    import threading

    sim = host("H100", 2, watts=[70.0, 300.0], counter_period_s=0.1)
    monkeypatch.setitem(sys.modules, "pynvml", sim)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("PYTORCH_NVML_BASED_CUDA_CHECK", "1"), ("LLEM_CACHE", str(tmp_path / "cache"))):
        monkeypatch.setenv(key, value)  # what main() sets by default: undone after the test
    out = tmp_path / "check.json"
    assert gc.main(["--json", str(out), "--budget-s", "60"]) == 2
    doc = json.loads(out.read_text())
    assert doc["gpu"]["nvml_index"] == 1 and doc["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    idle = doc["steps"]["idle_no_context"]
    assert idle["ok"] and idle["data"]["avg_w_mean"] == pytest.approx(300.0)  # the job's GPU, not GPU 0
    assert idle["data"]["counter_w"] == pytest.approx(300.0, rel=0.05)  # real-time sampling: edges ±1 row
    assert any("torch sees no CUDA device" in e for e in doc["errors"])
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()
                and getattr(t.function, "__qualname__", "").startswith("Check.watchdog")]  # gpu_check's own
