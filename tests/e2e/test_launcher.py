"""llem's launcher in real multiruns (`python -m llem -m ...` subprocesses, llem's sweeper): crashes,
timeouts, Ctrl-C, kill -9 + resume, GPU slots (fake pynvml), submitit_local and Ray. Jobs are forked
from the launcher's zygote (the default), except where a test asks for hydra.launcher.fresh_process=spawn."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import REPO, read_result, run_llem

pytestmark = pytest.mark.slow

FAST = ["n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true"]


def llem_env(cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "1", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("LLEM_TEST_PYTHONPATH", ""), str(REPO),
                                                    env.get("PYTHONPATH", "")] if p)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def start_llem(args: list[str], cwd: Path, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llem", *args], cwd=cwd, env=llem_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def manifest_of(sweep: Path) -> dict[str, Any]:
    return json.loads((sweep / "manifest.json").read_text())


def wait_for(cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
        except (OSError, ValueError, KeyError, IndexError):
            got = None
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"llem exited ({proc.returncode}) before: {what}\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def wakeups(proc: psutil.Process) -> int:
    """Context switches of every thread of `proc` so far (voluntary + involuntary, from /proc)."""
    total = 0
    for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def zygote_of(pid: int) -> psutil.Process:
    """The fork server a running job was forked from (its parent)."""
    parent = psutil.Process(pid).parent()
    assert parent is not None and "llem.launch.zygote" in parent.cmdline(), parent
    return parent


def job_running(sweep: Path, index: int) -> int | None:
    """The job's pid once its process has started and written result.json (status running)."""
    entry = manifest_of(sweep)["jobs"][index]
    if entry["status"] != "running":
        return None
    res = read_result(Path(entry["job_dir"]))
    return res["identity"]["pid"] if res["status"] == "running" and res["identity"]["pid"] == entry["pid"] else None


def test_crashing_jobs_are_recorded_and_the_study_goes_on(tmp_path: Path, llem_cache: Path, tiny_model: Path) -> None:
    sweep = tmp_path / "sweep"
    p = run_llem(["-m", "debug.fault=none,raise,exit,segfault,sigkill", *FAST, f"hydra.sweep.dir={sweep}"],
                 tmp_path, llem_cache, timeout=240)
    assert p.returncode == 1, p.stdout + p.stderr
    m = manifest_of(sweep)
    jobs = {j["overrides"][0]: j for j in m["jobs"]}
    assert {k: j["status"] for k, j in jobs.items()} == {
        "debug.fault=none": "completed", "debug.fault=raise": "failed", "debug.fault=exit": "failed",
        "debug.fault=segfault": "failed", "debug.fault=sigkill": "failed"}
    assert m["status"] == "failed"
    results = {k: read_result(Path(j["job_dir"])) for k, j in jobs.items()}
    pids = [r["identity"]["pid"] for r in results.values()]
    assert len(set(pids)) == 5  # a fresh process per job
    assert {j["start_method"] for j in m["jobs"]} == {"fork"}  # forked from the zygote
    assert {k: r["status"] for k, r in results.items()} == {k: j["status"] for k, j in jobs.items()}
    err = {k: r["error"] for k, r in results.items()}
    assert err["debug.fault=raise"]["type"] == "RuntimeError" and "injected" in err["debug.fault=raise"]["traceback"]
    assert err["debug.fault=exit"]["exit_code"] == 3 and err["debug.fault=exit"]["reason"] == "crash"
    assert err["debug.fault=segfault"]["exit_signal"] == "SIGSEGV"
    assert "inject_fault" in err["debug.fault=segfault"]["traceback"]  # faulthandler's Python stack
    assert err["debug.fault=sigkill"]["exit_signal"] == "SIGKILL" and "out-of-memory" in err["debug.fault=sigkill"]["message"]
    assert jobs["debug.fault=segfault"]["error"]["exit_signal"] == "SIGSEGV"  # the manifest says the same
    assert "4 of 5 jobs failed" in p.stderr
    ok = results["debug.fault=none"]  # FAST: 2 prompts x 4 tokens (the tiny model runs to max_output_tokens)
    assert ok["workload"]["output_tokens"] == 8
    assert ok["throughput"]["output_tok_s"] == pytest.approx(8 / ok["timing"]["window_s"], rel=1e-9)


def test_under_hydras_basic_sweeper_the_launcher_writes_its_own_manifest(tmp_path: Path, llem_cache: Path) -> None:
    sweep = tmp_path / "sweep"
    p = run_llem(["-m", "hydra/sweeper=basic", "debug.fault=raise,exit", "hydra.launcher.fresh_process=spawn", *FAST,
                  f"hydra.sweep.dir={sweep}"], tmp_path, llem_cache, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    m = manifest_of(sweep)
    assert m["created_by"] == "llem launcher" and m["status"] == "failed" and len(m["study_design_hash"]) == 16
    assert [j["start_method"] for j in m["jobs"]] == ["spawn", "spawn"]  # a new interpreter per job, as asked
    assert [(j["index"], j["status"], j["error"]["reason"]) for j in m["jobs"]] == [
        (0, "failed", "exception"), (1, "failed", "crash")]
    assert "2 of 2 jobs failed" in p.stderr


def test_timeout_kills_the_job_while_the_parent_sleeps(tmp_path: Path, llem_cache: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = start_llem(["-m", "debug.fault=sleep", "debug.sleep_s=120", "hydra.launcher.timeout_s=8", "hydra.launcher.kill_grace_s=2",
                       *FAST, f"hydra.sweep.dir={sweep}"], tmp_path, llem_cache)
    try:
        child = wait_for(lambda: job_running(sweep, 0), 60, "job 0 running", proc)
        time.sleep(0.5)  # inside debug.fault=sleep now
        parent, zygote = psutil.Process(proc.pid), zygote_of(child)
        # asleep in the kernel: a process that polls (even every 50 ms) wakes up dozens of times in 2 s;
        # one blocked in select/read wakes up a handful of times at most (counts, not CPU seconds)
        c0, z0 = wakeups(parent), wakeups(zygote)
        time.sleep(2.0)
        c1, z1 = wakeups(parent), wakeups(zygote)
        assert c1 - c0 <= 5, f"the launcher woke up {c1 - c0} times in 2 s while the job slept"
        assert z1 - z0 <= 5, f"the zygote woke up {z1 - z0} times in 2 s while the job slept"
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    res = read_result(sweep / "0")
    assert res["status"] == "failed" and res["error"]["reason"] == "timeout"
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    entry = manifest_of(sweep)["jobs"][0]
    assert entry["status"] == "failed" and entry["error"]["type"] == "Timeout"
    assert entry["duration_s"] >= 7 and isinstance(entry["parent_cpu_s"], float)  # stopped after its limit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_running_job_and_keeps_what_was_written(tmp_path: Path, llem_cache: Path,
                                                                  tiny_model: Path, sig: signal.Signals) -> None:
    sweep = tmp_path / "sweep"
    proc = start_llem(["-m", "debug.fault=none,sleep", "debug.sleep_s=120", *FAST, f"hydra.sweep.dir={sweep}"],
                      tmp_path, llem_cache)
    try:
        child = wait_for(lambda: job_running(sweep, 1), 120, "job 1 running", proc)
        before = (sweep / "0" / "result.json").read_bytes()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert (sweep / "0" / "result.json").read_bytes() == before  # job 0 untouched
    assert json.loads(before)["status"] == "completed"
    m = manifest_of(sweep)
    assert m["status"] == "interrupted"
    assert [j["status"] for j in m["jobs"]] == ["completed", "interrupted"]
    res = read_result(sweep / "1")
    assert res["status"] == "interrupted" and res["error"]["reason"] == "interrupted"
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert "interrupted" in out


def test_kill_9_then_resume_completes_every_job_exactly_once(tmp_path: Path, llem_cache: Path,
                                                             tiny_model: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep}"]
    proc = start_llem(args, tmp_path, llem_cache)
    try:
        child = wait_for(lambda: job_running(sweep, 1), 120, "job 1 running", proc)
        zygote = zygote_of(child)
        job0 = (sweep / "0" / "result.json").read_bytes()
        proc.kill()  # kill -9: no cleanup in the parent at all
        proc.wait()
    finally:
        proc.kill()
    gone, alive = psutil.wait_procs([zygote, *([psutil.Process(child)] if psutil.pid_exists(child) else [])],
                                    timeout=20)
    assert not alive, f"outlived their launcher: {alive}"  # the job and the zygote it was forked from
    assert manifest_of(sweep)["jobs"][1]["status"] == "running"  # what the dead parent left
    assert read_result(sweep / "1")["status"] == "interrupted"  # the forked job recorded its SIGTERM

    p = run_llem([*args, "study.resume=true"], tmp_path, llem_cache, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (sweep / "0" / "result.json").read_bytes() == job0  # not run again
    m = manifest_of(sweep)
    assert m["status"] == "completed" and [j["status"] for j in m["jobs"]] == ["completed", "completed"]
    done = [read_result(d) for d in sweep.iterdir() if (d / "result.json").is_file()]
    keys = [(r["identity"]["config_hash"], r["identity"]["cycle"]) for r in done if r["status"] == "completed"]
    assert sorted(keys) == sorted((j["config_hash"], j["cycle"]) for j in m["jobs"])  # each exactly once


FAKE_PYNVML = '''
"""Fake NVML (2 GPUs; GPU 1 has a foreign process) for launcher tests on a machine without GPUs."""
from types import SimpleNamespace
class NVMLError(Exception):
    pass
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 2
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetName(h): return "Fake GPU"
def nvmlDeviceGetUUID(h): return f"GPU-fake-{h}"
def nvmlDeviceGetMemoryInfo(h): return SimpleNamespace(used=100 * 2**20, total=80 * 2**30)
def nvmlDeviceGetComputeRunningProcesses(h): return [SimpleNamespace(pid=999999, usedGpuMemory=2**30)] if h == 1 else []
def nvmlDeviceGetGraphicsRunningProcesses(h): return []
'''


def test_gpu_slots_pin_each_job_and_record_health(tmp_path: Path, llem_cache: Path, tiny_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.setenv("LLEM_TEST_PYTHONPATH", str(fake))
    sweep = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "llem", "-m", "seed=0,1", "hydra.launcher.gpus_per_job=1", "study.gaps=false",
                        "energy=none", *FAST, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=llem_env(llem_cache),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 jobs will run at once" in p.stderr
    res = [read_result(sweep / str(i)) for i in range(2)]
    assert sorted(r["environment"]["cuda_visible_devices"] for r in res) == ["0", "1"]
    by_gpu = {r["environment"]["cuda_visible_devices"]: r["environment"]["health"] for r in res}
    assert by_gpu["0"]["ok"] and [g["ref"] for g in by_gpu["0"]["gpus"]] == ["0"]
    assert not by_gpu["1"]["ok"] and "foreign process(es) 999999" in by_gpu["1"]["problems"][0]
    assert sorted(j["gpus"][0] for j in manifest_of(sweep)["jobs"]) == ["0", "1"]


def test_submitit_local_jobs_record_themselves_and_the_sweeper_aggregates(tmp_path: Path, llem_cache: Path,
                                                                          tiny_model: Path) -> None:
    sweep = tmp_path / "sweep"
    p = run_llem(["-m", "hydra/launcher=submitit_local", "debug.fault=none,raise", *FAST, f"hydra.sweep.dir={sweep}"],
                 tmp_path, llem_cache, timeout=240)
    assert p.returncode == 1, p.stdout + p.stderr
    m = manifest_of(sweep)
    assert [j["status"] for j in m["jobs"]] == ["completed", "failed"]
    assert m["jobs"][1]["error"]["type"] == "RuntimeError"
    res = [read_result(sweep / str(i)) for i in range(2)]
    assert res[0]["identity"]["pid"] != res[1]["identity"]["pid"]
    assert (sweep / ".submitit").is_dir()


def test_ray_local_cluster(tmp_path: Path, llem_cache: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("the ray extra (hydra-ray-launcher) is not installed")
    # amdsmi (a zeus dependency) raises KeyError at import without AMD's library; Ray then cannot probe
    # GPUs. A stub that raises ImportError, as amdsmi should, stands in for the missing AMD hardware.
    stub = tmp_path / "noamd" / "amdsmi"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("no AMD GPU library on this machine")\n')
    monkeypatch.setenv("LLEM_TEST_PYTHONPATH", str(stub.parent))
    sweep = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "llem", "-m", "hydra/launcher=llem_ray", "hydra.launcher.ray.remote.num_gpus=0",
                        "+hydra.launcher.ray.init.num_cpus=2", "debug.fault=none,raise", *FAST,
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=llem_env(llem_cache),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    m = manifest_of(sweep)
    assert [j["status"] for j in m["jobs"]] == ["completed", "failed"]
    res = [read_result(sweep / str(i)) for i in range(2)]
    assert res[0]["identity"]["pid"] != res[1]["identity"]["pid"]
