"""llem.launch without Hydra: settings, slots, health (fake pynvml), outcome rules, and the Supervisor
running real (tiny, torch-free) child processes: blocking waits, timeouts, tree kills, slots, gaps."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

from llem.config.validate import ConfigError
from llem.launch import health, outcome
from llem.launch.console import countdown
from llem.launch.process import Waiter, kill_tree, spawn
from llem.launch.settings import LaunchSettings
from llem.launch.slots import make_slots, slot_env, visible_gpus
from llem.launch.supervisor import Finished, JobPlan, LaunchAborted, LaunchInterrupted, Supervisor
from llem.study import manifest
from llem.study.gaps import Gaps

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # child processes cannot import tests/


# -- settings ------------------------------------------------------------------------------------
def test_settings_reject_bad_values_naming_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as e:
        LaunchSettings.from_study({"on_unhealthy": "panic", "timeout_s": -1, "gpus_per_job": -2,
                                   "health_poll_s": 0})
    keys = {k for k, _, _ in e.value.problems}
    assert keys == {"study.on_unhealthy", "study.timeout_s", "study.gpus_per_job", "study.health_poll_s"}
    assert "study.on_unhealthy=panic is invalid: allowed one of warn, wait, abort" in str(e.value)


def test_settings_zero_timeout_means_no_limit() -> None:
    assert LaunchSettings.from_study({"timeout_s": 0}).timeout_s is None
    assert LaunchSettings.from_study({"timeout_s": 5}).timeout_s == 5


# -- slots ---------------------------------------------------------------------------------------
def test_slots_split_visible_gpus_into_disjoint_groups() -> None:
    assert make_slots(["0", "1", "2", "3"], 2) == [("0", "1"), ("2", "3")]
    assert make_slots(["0", "1", "2"], 2) == [("0", "1")]  # floor(3/2): one GPU stays idle
    assert make_slots(["0", "1", "2"], 1) == [("0",), ("1",), ("2",)]
    assert make_slots([], 0) == [()]  # default: one job at a time, no pinning


def test_slots_too_many_gpus_per_job_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as e:
        make_slots(["0"], 2)
    assert e.value.problems[0][0] == "study.gpus_per_job"
    assert "visible: 0" in str(e.value)
    with pytest.raises(ConfigError, match="visible: none"):
        make_slots([], 1)


def test_visible_gpus_respect_an_existing_allocation() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, nvml_count=8) == ["2", "3"]
    assert visible_gpus({}, nvml_count=2) == ["0", "1"]
    assert visible_gpus({}, nvml_count=None) == []
    assert slot_env(("2", "3"), {}) == {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert slot_env((), {}) == {}


# -- health (fake pynvml where the real one is imported) ------------------------------------------
def fake_pynvml(used_mib: list[float], procs: list[list[int]], fail_init: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    m.nvmlInit = init  # type: ignore[attr-defined]
    m.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: len(used_mib)  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByUUID = lambda u: int(u.rsplit("-", 1)[1])  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: b"Fake H100"  # type: ignore[attr-defined]
    m.nvmlDeviceGetUUID = lambda h: f"GPU-fake-{h}"  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=int(used_mib[h] * health.MIB), total=80 * 1024 * health.MIB)
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=p, usedGpuMemory=512 * health.MIB) for p in procs[h]]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []  # type: ignore[attr-defined]
    return m


def test_health_flags_memory_in_use_and_foreign_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([300.0, 5000.0], [[os.getpid()], [4242]]))
    report = health.check(["0", "1"], 1024, True, own_pids={os.getpid()})
    assert report["checked"] and not report["ok"]
    assert report["problems"] == [
        "GPU 1: 5000 MiB in use before the job (threshold study.health_max_memory_used_mib=1024)",
        "GPU 1: foreign process(es) 4242 running"]
    assert report["gpus"][0]["name"] == "Fake H100" and report["gpus"][1]["processes"][0]["pid"] == 4242
    # only the job's own GPUs count; a UUID entry is looked up by UUID
    assert health.check(["GPU-fake-0"], 1024, True, own_pids={os.getpid()})["ok"]
    assert health.check(["1"], 8000, False, own_pids=set())["ok"]  # thresholds are the user's


def test_health_without_nvml_is_recorded_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([0.0], [[]], fail_init=True))
    report = health.check(None, 1024, True, own_pids=set())
    assert report["ok"] and not report["checked"] and "Driver Not Loaded" in report["reason"]


# -- outcome rules ---------------------------------------------------------------------------------
RUNNING = {"status": "running", "identity": {"pid": 1}}


@pytest.mark.parametrize("rc, result, kw, status, reason, signal_name", [
    (0, {"status": "completed"}, {}, "completed", None, None),
    (-11, {"status": "completed"}, {}, "completed", None, "SIGSEGV"),  # crash in teardown: result kept
    (0, {"status": "failed", "error": {"type": "RuntimeError", "message": "boom"}}, {}, "failed", "exception", None),
    (1, {"status": "failed", "error": {"type": "AcceleratorError", "message": "CUDA error: out of memory"}}, {},
     "failed", "cuda_error", None),
    (3, RUNNING, {}, "failed", "crash", None),
    (-11, RUNNING, {}, "failed", "signal", "SIGSEGV"),
    (-9, None, {}, "failed", "signal", "SIGKILL"),
    (130, RUNNING, {"timed_out": True, "timeout_s": 5.0}, "failed", "timeout", None),
    (-9, RUNNING, {"interrupted": True}, "interrupted", "interrupted", "SIGKILL"),
])
def test_classify(rc: int, result: Any, kw: dict[str, Any], status: str, reason: Any, signal_name: Any) -> None:
    o = outcome.classify(rc, result, **kw)
    assert (o.status, o.reason, o.exit_signal) == (status, reason, signal_name)
    if status != "completed":
        assert o.error["reason"] == reason and o.rewrite


def test_finalize_result_rewrites_a_dead_jobs_result_and_keeps_its_own_fields(tmp_path: Path) -> None:
    written = {"status": "running", "identity": {"pid": 7, "config_hash": "abc"}, "timing": {"load_s": 1.0}}
    (tmp_path / "result.json").write_text(json.dumps(written))
    o = outcome.classify(-9, written)
    outcome.finalize_result(tmp_path, o, written, {"pid": 7})
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "failed" and data["error"]["exit_signal"] == "SIGKILL"
    assert data["identity"]["config_hash"] == "abc" and data["timing"] == {"load_s": 1.0}
    # no result.json at all: one is created from what the launcher knows
    other = tmp_path / "other"
    other.mkdir()
    outcome.finalize_result(other, outcome.classify(3, None), None, {"config_hash": "def", "cycle": 1})
    data = json.loads((other / "result.json").read_text())
    assert data["status"] == "failed" and data["identity"]["cycle"] == 1 and data["error"]["exit_code"] == 3


# -- processes ---------------------------------------------------------------------------------------
def test_kill_tree_reaches_grandchildren_that_left_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = ("import os,subprocess,sys,time\n"
              "a=subprocess.Popen(['sleep','60'])\n"
              "b=subprocess.Popen(['sleep','60'],start_new_session=True)\n"
              f"open({str(pidfile)!r},'w').write(f'{{a.pid}} {{b.pid}}')\n"
              "signal_ignored=__import__('signal').signal(15, lambda *a: None)\n"  # ignores SIGTERM
              "time.sleep(60)\n")
    proc = spawn([sys.executable, "-c", script], os.environ)
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    t0 = time.monotonic()
    kill_tree(proc, grace_s=0.5)
    assert proc.returncode == -9  # ignored SIGTERM: SIGKILL after the grace
    assert time.monotonic() - t0 < 5
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_waiter_blocks_without_using_cpu() -> None:
    proc = spawn(["sleep", "1.5"], os.environ)
    waiter = Waiter()
    waiter.add(proc)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    exited: list[Any] = []
    while not exited:
        exited = waiter.wait(None)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    waiter.close()
    proc.wait()
    assert time.monotonic() - t0 >= 1.0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert cpu < 0.05, f"parent used {cpu:.3f} s CPU while waiting 1.5 s"


# -- the supervisor with real child processes -----------------------------------------------------
def job_writes_result(job_dir: str, sleep_s: float = 0.0, status: str = "completed") -> None:
    """A stand-in job: sleeps, then writes result.json the way llem's job does."""
    t0 = time.time()
    ident = {"pid": os.getpid()}
    Path(job_dir, "result.json").write_text(json.dumps({"status": "running", "identity": ident}))
    time.sleep(sleep_s)
    Path(job_dir, "result.json").write_text(json.dumps({
        "status": status, "identity": ident, "t0": t0, "t1": time.time(),
        "environment": {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "health": json.loads(os.environ.get(health.HEALTH_ENV, "null"))}}))


def plans(tmp_path: Path, jobs: list[tuple[Any, tuple[Any, ...]]], cycles: list[int] | None = None) -> list[Any]:
    out = []
    for i, (fn, args) in enumerate(jobs):
        job_dir = tmp_path / str(i)
        cycle = cycles[i] if cycles else 0

        def prep(i: int = i, fn: Any = fn, args: tuple[Any, ...] = args, job_dir: Path = job_dir,
                 cycle: int = cycle) -> JobPlan:
            return JobPlan(i, i, cycle, job_dir, f"job{i}", cloudpickle.dumps((fn, (str(job_dir), *args), {})),
                           {"job_index": i})
        out.append(prep)
    manifest.write(tmp_path, manifest.new("d" * 16, [{"index": i, "status": "planned"} for i in range(len(jobs))]))
    return out


def healthy(refs: Any) -> tuple[list[health.GpuState], None]:
    return [health.GpuState(ref=r, memory_used_mib=10.0) for r in (refs or ["0"])], None


def test_parent_stays_idle_and_each_job_gets_its_own_process(tmp_path: Path) -> None:
    sup = Supervisor(LaunchSettings(), tmp_path, [()], Gaps(0, 0), out=io.StringIO(), probe=healthy)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    done = sup.run(plans(tmp_path, [(job_writes_result, (1.5,)), (job_writes_result, (0.0,))]))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    assert [f.outcome.status for f in done] == ["completed", "completed"]
    assert done[0].pid != done[1].pid != os.getpid()
    m = manifest.load(tmp_path)
    assert m is not None and [j["status"] for j in m["jobs"]] == ["completed", "completed"]
    assert m["jobs"][0]["parent_cpu_s"] < 0.05  # the parent's CPU time while job 0 ran 1.5 s
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert cpu < 1.0, f"launcher used {cpu:.2f} s CPU for two tiny jobs"


def test_timeout_kills_and_records_reason(tmp_path: Path) -> None:
    sup = Supervisor(LaunchSettings(timeout_s=1.0, kill_grace_s=1.0), tmp_path, [()], Gaps(0, 0),
                     out=io.StringIO(), probe=healthy)
    t0 = time.monotonic()
    done = sup.run(plans(tmp_path, [(job_writes_result, (60.0,)), (job_writes_result, (0.0,))]))
    assert time.monotonic() - t0 < 15
    assert [f.outcome.status for f in done] == ["failed", "completed"]  # the study went on
    data = json.loads((tmp_path / "0" / "result.json").read_text())
    assert data["status"] == "failed" and data["error"]["reason"] == "timeout"
    assert "study.timeout_s=1" in data["error"]["message"]
    assert not psutil.pid_exists(done[0].pid)


def test_gpu_slots_run_jobs_side_by_side_each_pinned(tmp_path: Path) -> None:
    seen: list[Any] = []

    def probe(refs: Any) -> Any:
        seen.append(refs)
        return healthy(refs)

    sup = Supervisor(LaunchSettings(gpus_per_job=1), tmp_path, [("0",), ("1",)], Gaps(0, 0),
                     out=io.StringIO(), probe=probe)
    done = sup.run(plans(tmp_path, [(job_writes_result, (2.0,)), (job_writes_result, (2.0,))]))
    assert all(f.outcome.status == "completed" for f in done)
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(2)]
    assert sorted(r["environment"]["cuda_visible_devices"] for r in res) == ["0", "1"]
    assert res[0]["t0"] < res[1]["t1"] and res[1]["t0"] < res[0]["t1"]  # they overlapped
    assert sorted(map(tuple, seen)) == [("0",), ("1",)]  # each health check looked at its own GPU
    assert res[0]["environment"]["health"]["gpus"][0]["ref"] in ("0", "1")


def test_gap_is_waited_between_jobs_with_a_countdown(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = Supervisor(LaunchSettings(), tmp_path, [()], Gaps(config_gap_s=0.5, cycle_gap_s=1.0), out=out,
                     probe=healthy)
    sup.run(plans(tmp_path, [(job_writes_result, ()), (job_writes_result, ()), (job_writes_result, ())],
                  cycles=[0, 0, 1]))
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(3)]
    assert res[1]["t0"] - res[0]["t1"] >= 0.5  # config gap
    assert res[2]["t0"] - res[1]["t1"] >= 1.0  # cycle gap
    text = out.getvalue()
    assert "waiting 1s (config gap)" in text and "waiting 1s (cycle gap)" in text


def test_on_unhealthy_abort_starts_nothing(tmp_path: Path) -> None:
    def busy(refs: Any) -> Any:
        return [health.GpuState(ref="0", memory_used_mib=30000.0)], None

    sup = Supervisor(LaunchSettings(on_unhealthy="abort"), tmp_path, [()], Gaps(0, 0), out=io.StringIO(),
                     probe=busy)
    with pytest.raises(LaunchAborted) as e:
        sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert e.value.code == 3 and "30000 MiB in use" in e.value.message
    m = manifest.load(tmp_path)
    assert m is not None and m["status"] == "aborted" and m["jobs"][0]["status"] == "planned"
    assert not (tmp_path / "0" / "result.json").exists()


def test_on_unhealthy_wait_rechecks_then_runs_and_records_what_it_saw(tmp_path: Path) -> None:
    calls = []

    def clears(refs: Any) -> Any:
        calls.append(time.monotonic())
        used = 30000.0 if len(calls) < 3 else 10.0
        return [health.GpuState(ref="0", memory_used_mib=used)], None

    settings = LaunchSettings(on_unhealthy="wait", health_poll_s=0.3, health_wait_max_s=10)
    sup = Supervisor(settings, tmp_path, [()], Gaps(0, 0), out=io.StringIO(), probe=clears)
    done = sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert done[0].outcome.status == "completed" and len(calls) == 3
    assert calls[2] - calls[0] >= 0.5
    res = json.loads((tmp_path / "0" / "result.json").read_text())
    assert res["environment"]["health"]["ok"] is True


def test_on_unhealthy_wait_is_bounded_and_warn_is_recorded(tmp_path: Path) -> None:
    def busy(refs: Any) -> Any:
        return [health.GpuState(ref="0", memory_used_mib=30000.0, processes=[{"pid": 1, "used_mib": 1.0}])], None

    settings = LaunchSettings(on_unhealthy="wait", health_poll_s=0.2, health_wait_max_s=0.5)
    sup = Supervisor(settings, tmp_path, [()], Gaps(0, 0), out=io.StringIO(), probe=busy)
    t0 = time.monotonic()
    done = sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert 0.5 <= time.monotonic() - t0 < 10 and done[0].outcome.status == "completed"
    h = json.loads((tmp_path / "0" / "result.json").read_text())["environment"]["health"]
    assert not h["ok"] and any("still unhealthy" in p for p in h["problems"])
    assert any("foreign process(es) 1" in p for p in h["problems"])
    m = manifest.load(tmp_path)
    assert m is not None and m["jobs"][0]["health"]["ok"] is False


def test_sigterm_on_the_launcher_stops_the_job_and_exits_130(tmp_path: Path) -> None:
    sup = Supervisor(LaunchSettings(kill_grace_s=5), tmp_path, [()], Gaps(0, 0), out=io.StringIO(), probe=healthy)

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = manifest.load(tmp_path)
            if m and m["jobs"][1]["status"] == "running" and (tmp_path / "1" / "result.json").exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_when_running, daemon=True).start()
    with pytest.raises(LaunchInterrupted) as e:
        sup.run(plans(tmp_path, [(job_writes_result, ()), (job_writes_result, (30.0,)), (job_writes_result, ())]))
    assert e.value.code == 130 and e.value.signame == "SIGTERM"
    m = manifest.load(tmp_path)
    assert m is not None and m["status"] == "interrupted"
    assert [j["status"] for j in m["jobs"]] == ["completed", "interrupted", "planned"]
    res = json.loads((tmp_path / "1" / "result.json").read_text())
    assert res["status"] == "interrupted" and "SIGTERM" in res["error"]["message"]
    assert not (tmp_path / "2").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_job_that_cannot_be_prepared_fails_alone(tmp_path: Path) -> None:
    ok = plans(tmp_path, [(job_writes_result, ()), (job_writes_result, ())])
    bad = Finished(0, 0, outcome.Outcome("failed", "config", {"type": "X"}, None, None, False))
    sup = Supervisor(LaunchSettings(), tmp_path, [()], Gaps(0, 0), out=io.StringIO(), probe=healthy)
    done = sup.run([lambda: bad, ok[1]])
    assert [f.outcome.status for f in done] == ["failed", "completed"]


def test_countdown_rewrites_one_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    t0 = time.monotonic()
    countdown(1.2, "config gap", out)
    assert 1.1 <= time.monotonic() - t0 < 3
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 2 and "config gap: next job in 2s" in text


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """kill -9 of the launcher: the job process gets SIGTERM (PR_SET_PDEATHSIG), no orphan measures on."""
    pidfile = tmp_path / "child"
    payload = tmp_path / "p.pkl"
    payload.write_bytes(cloudpickle.dumps((time.sleep, (60,), {})))
    script = ("import os,sys,time\n"
              "from llem.launch.process import spawn, child_argv, child_env\n"
              f"p=spawn(child_argv(__import__('pathlib').Path({str(payload)!r}), "
              f"__import__('pathlib').Path({str(tmp_path / 'r')!r}), __import__('pathlib').Path({str(tmp_path / 'f')!r})),"
              " child_env(os.environ, {'LLEM_LAUNCH_PARENT_PID': str(os.getpid())}))\n"
              f"open({str(pidfile)!r},'w').write(str(p.pid))\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = psutil.Process(int(pidfile.read_text()))
    time.sleep(0.5)  # let the child install its death signal
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, "job process survived its launcher"
