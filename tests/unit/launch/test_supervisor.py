"""llem.launch without Hydra: settings, slots, health (fake pynvml), outcome rules, and the Supervisor
running real (tiny, torch-free) child processes: blocking waits, timeouts, tree kills, slots, gaps.
Jobs are forked from a real zygote (llem.launch.zygote) by default, as in a study, with a light
preload list so each test starts its own in well under a second; spawned jobs are tested too."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

from llem.errors import ConfigError
from llem.launch import health, outcome
from llem.launch.console import countdown
from llem.launch.process import JobProcess, Waiter, child_argv, child_env, kill_tree, spawn
from llem.launch.settings import LaunchSettings
from llem.launch.slots import make_slots, slot_env, visible_gpus
from llem.launch.supervisor import Finished, JobPlan, LaunchAborted, LaunchInterrupted, Supervisor
from llem.launch.zygote import EXTRA_PRELOAD_ENV, ForkServer
from llem.study import manifest
from llem.study.gaps import Gaps
from llem.study.hooks import ManifestLedger

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # child processes cannot import tests/

LIGHT_PRELOAD = ("cloudpickle", "psutil")  # the jobs here need no torch: keep each test's zygote quick


@pytest.fixture
def zygote() -> Iterator[ForkServer]:
    server = ForkServer(preload=LIGHT_PRELOAD).start()
    yield server
    server.close()


def supervisor(tmp_path: Path, zygote: ForkServer | None, settings: LaunchSettings | None = None,
               slots: list[Any] | None = None, gaps: Gaps | None = None, out: Any = None,
               probe: Callable[..., Any] | None = None) -> Supervisor:
    return Supervisor(settings or LaunchSettings(), tmp_path, slots or [()], gaps or Gaps(0, 0), out=out or io.StringIO(),
                      probe=probe or healthy, fork_server=zygote, ledger=ManifestLedger(tmp_path))


# -- settings ------------------------------------------------------------------------------------
def test_settings_reject_bad_values_naming_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as e:
        LaunchSettings.resolve({"on_unhealthy": "panic", "timeout_s": -1, "gpus_per_job": -2,
                                "health_poll_s": 0, "kill_grace_s": float("nan"), "_target_": "x"})
    keys = {k for k, _, _ in e.value.problems}
    assert keys == {"hydra.launcher.on_unhealthy", "hydra.launcher.timeout_s", "hydra.launcher.gpus_per_job",
                    "hydra.launcher.health_poll_s", "hydra.launcher.kill_grace_s"}
    assert "hydra.launcher.on_unhealthy=panic is invalid: allowed one of warn, wait, abort" in str(e.value)
    assert LaunchSettings.resolve({"health_poll_s": 0.01, "kill_grace_s": 0}).health_poll_s == 0.01  # bounds


def test_settings_zero_timeout_means_no_limit() -> None:
    assert LaunchSettings.resolve({"timeout_s": 0}).timeout_s is None
    assert LaunchSettings.resolve({"timeout_s": 5}).timeout_s == 5


def test_settings_fresh_process_values() -> None:
    assert LaunchSettings().fresh_process == "auto"
    assert LaunchSettings.resolve({"fresh_process": "spawn"}).fresh_process == "spawn"
    with pytest.raises(ConfigError, match="hydra.launcher.fresh_process=exec is invalid: allowed one of auto"):
        LaunchSettings.resolve({"fresh_process": "exec"})


# -- slots ---------------------------------------------------------------------------------------
def test_slots_split_visible_gpus_into_disjoint_groups() -> None:
    assert make_slots(["0", "1", "2", "3"], 2) == [("0", "1"), ("2", "3")]
    assert make_slots(["0", "1", "2"], 2) == [("0", "1")]  # floor(3/2): one GPU stays idle
    assert make_slots(["0", "1", "2"], 1) == [("0",), ("1",), ("2",)]
    assert make_slots([], 0) == [()]  # default: one job at a time, no pinning


def test_slots_too_many_gpus_per_job_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as e:
        make_slots(["0"], 2)
    assert e.value.problems[0][0] == "hydra.launcher.gpus_per_job"
    assert "visible: 0" in str(e.value)
    with pytest.raises(ConfigError, match="visible: none"):
        make_slots([], 1)


def test_visible_gpus_respect_an_existing_allocation() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, nvml_count=8) == ["2", "3"]
    assert visible_gpus({}, nvml_count=2) == ["0", "1"]
    assert visible_gpus({}, nvml_count=None) == []
    assert slot_env(("2", "3"), {}) == {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert slot_env((), {}) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # every job numbers GPUs as NVML does
    assert slot_env((), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) == {}  # unless the user chose an order


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
        "GPU 1: 5000 MiB in use before the job (threshold hydra.launcher.health_max_memory_used_mib=1024)",
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
def start_job(kind: str, fn: Any, args: tuple[Any, ...], tmp_path: Path, zygote: ForkServer,
              extra_env: dict[str, str] | None = None) -> JobProcess:
    """One job process running fn(*args), forked from the zygote or spawned, as the Supervisor does."""
    payload = tmp_path / f"{kind}.pkl"
    payload.write_bytes(cloudpickle.dumps((fn, args, {})))
    paths = (payload, tmp_path / f"{kind}.ret", tmp_path / f"{kind}.fault")
    env = child_env(os.environ, {"LLEM_LAUNCH_PARENT_PID": str(os.getpid()), **(extra_env or {})})
    return zygote.run(*paths, env) if kind == "fork" else spawn(child_argv(*paths), env)


def run_script(script: str) -> None:
    exec(compile(script, "job-script", "exec"), {})


@pytest.mark.parametrize("kind", ["fork", "spawn"])
def test_kill_tree_reaches_grandchildren_that_left_the_group(kind: str, tmp_path: Path, zygote: ForkServer) -> None:
    pidfile = tmp_path / "pids"
    script = ("import os,subprocess,sys,time\n"
              "a=subprocess.Popen(['sleep','60'])\n"
              "b=subprocess.Popen(['sleep','60'],start_new_session=True)\n"
              f"open({str(pidfile)!r},'w').write(f'{{a.pid}} {{b.pid}}')\n"
              "signal_ignored=__import__('signal').signal(15, lambda *a: None)\n"  # ignores SIGTERM
              "time.sleep(60)\n")
    proc = start_job(kind, run_script, (script,), tmp_path, zygote)
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    kill_tree(proc, grace_s=0.5)
    assert proc.returncode == -9  # ignored SIGTERM: SIGKILL after the grace
    for pid in [proc.pid, *pids]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("kind", ["fork", "spawn"])
def test_waiter_blocks_in_the_kernel_until_the_job_exits(kind: str, tmp_path: Path, zygote: ForkServer) -> None:
    """One blocking select on the job's pidfd for the whole 1.5 s: no polling loop (a loop that woke up
    every few ms, or returned early, would make several calls). CPU time is a benchmark, not a test."""
    proc = start_job(kind, time.sleep, (1.5,), tmp_path, zygote)
    waiter = Waiter()
    waiter.add(proc)
    assert waiter._selector is not None and waiter._fds, "this kernel has pidfd_open: the waiter must use it"
    calls: list[Any] = []
    select = waiter._selector.select
    waiter._selector.select = lambda timeout=None: calls.append(timeout) or select(timeout)  # type: ignore[method-assign]
    t0 = time.monotonic()
    exited: list[Any] = []
    waits = 0
    while not exited:
        exited = waiter.wait(None)
        waits += 1
    waiter.close()
    assert proc.wait() == 0
    assert time.monotonic() - t0 >= 1.0  # it did wait for the job
    assert waits == 1 and calls == [None], f"{waits} waits, select timeouts {calls}: not one blocking wait"


def report_env(path: str) -> None:
    """A job that writes what it sees of its own process."""
    import ctypes

    libc_value = ctypes.CDLL(None).getenv
    libc_value.restype = ctypes.c_char_p
    c_value = libc_value(b"CUDA_VISIBLE_DEVICES")
    Path(path).write_text(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_visible_devices_libc": c_value.decode() if c_value else None,
        "parent_env": os.environ.get("LLEM_LAUNCH_PARENT_PID"), "marker": os.environ.get("LLEM_TEST_MARKER")}))


def test_a_forked_job_gets_its_own_session_environment_and_directory(tmp_path: Path, zygote: ForkServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "seen.json"
    proc = start_job("fork", report_env, (str(out),), tmp_path, zygote,
                     {"CUDA_VISIBLE_DEVICES": "1", "LLEM_TEST_MARKER": "job-only"})
    assert proc.wait() == 0
    seen = json.loads(out.read_text())
    assert seen["pid"] == proc.pid != zygote.pid and seen["ppid"] == zygote.pid
    assert seen["sid"] == seen["pgid"] == proc.pid  # its own session: a tree kill reaches all of it
    assert seen["cuda_visible_devices"] == seen["cuda_visible_devices_libc"] == "1"  # Python and C (CUDA) see it
    assert seen["marker"] == "job-only" and seen["parent_env"] == str(zygote.pid)
    assert seen["cwd"] == os.getcwd()
    zygote_env = psutil.Process(zygote.pid).environ()
    assert "CUDA_VISIBLE_DEVICES" not in zygote_env and "LLEM_TEST_MARKER" not in zygote_env  # the job's alone


# -- the supervisor with real child processes -----------------------------------------------------
def job_writes_result(job_dir: str, sleep_s: float = 0.0, status: str = "completed") -> None:
    """A stand-in job: sleeps, then writes result.json the way llem's job does."""
    t0 = time.time()
    ident = {"pid": os.getpid()}
    Path(job_dir, "result.json").write_text(json.dumps({"status": "running", "identity": ident}))
    time.sleep(sleep_s)
    Path(job_dir, "result.json").write_text(json.dumps({
        "status": status, "identity": ident, "t0": t0, "t1": time.time(),
        "ppid": os.getppid(),
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


def test_parent_stays_idle_and_each_job_gets_its_own_forked_process(tmp_path: Path, zygote: ForkServer) -> None:
    sup = supervisor(tmp_path, zygote)
    waits: list[Any] = []
    wait = sup.waiter.wait
    sup.waiter.wait = lambda timeout_s: waits.append(timeout_s) or wait(timeout_s)  # type: ignore[method-assign]
    done = sup.run(plans(tmp_path, [(job_writes_result, (1.5,)), (job_writes_result, (0.0,))]))
    assert [f.outcome.status for f in done] == ["completed", "completed"]
    assert len({done[0].pid, done[1].pid, os.getpid(), zygote.pid}) == 4
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(2)]
    assert [r["ppid"] for r in res] == [zygote.pid, zygote.pid]  # forked from the zygote
    m = manifest.load(tmp_path)
    assert m is not None and [j["status"] for j in m["jobs"]] == ["completed", "completed"]
    assert [j["start_method"] for j in m["jobs"]] == ["fork", "fork"]
    # the parent's and the zygote's CPU time while each job ran is recorded (its size is a benchmark:
    # scripts/bench_launcher.py); the parent blocks once per job, with no timeout, until the job exits
    assert all(isinstance(j["parent_cpu_s"], float) and isinstance(j["zygote_cpu_s"], float) for j in m["jobs"])
    assert waits == [None, None], f"the launcher woke up {len(waits)} times for 2 jobs (timeouts {waits})"
    assert zygote.ready()  # still serving: one zygote for the whole study
    for f in done:
        assert not psutil.pid_exists(f.pid)  # reaped: no zombie left behind by the zygote


def test_spawn_setting_starts_each_job_in_a_new_interpreter(tmp_path: Path, zygote: ForkServer) -> None:
    sup = supervisor(tmp_path, zygote, LaunchSettings(fresh_process="spawn"))
    done = sup.run(plans(tmp_path, [(job_writes_result, ()), (job_writes_result, ())]))
    assert [f.outcome.status for f in done] == ["completed", "completed"]
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(2)]
    assert [r["ppid"] for r in res] == [os.getpid(), os.getpid()]
    m = manifest.load(tmp_path)
    assert m is not None and [j["start_method"] for j in m["jobs"]] == ["spawn", "spawn"]
    assert "zygote_cpu_s" not in m["jobs"][0]


def test_without_a_given_zygote_the_supervisor_starts_and_ends_its_own(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llem.launch.zygote.DEFAULT_PRELOAD", LIGHT_PRELOAD)
    sup = supervisor(tmp_path, None)
    done = sup.run(plans(tmp_path, [(job_writes_result, ())]))
    res = json.loads((tmp_path / "0" / "result.json").read_text())
    assert done[0].outcome.status == "completed" and res["ppid"] != os.getpid()
    assert not psutil.pid_exists(res["ppid"]) or psutil.Process(res["ppid"]).status() == psutil.STATUS_ZOMBIE


FAKE_DRIVER = """import ctypes, os
ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libcuda.so.1"))
"""


def test_zygote_refuses_to_serve_once_the_cuda_driver_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    """A preload that loads libcuda.so (a stand-in: this machine has no CUDA driver) makes forking
    unsafe: the zygote refuses, and the study runs every job spawned, with one warning."""
    import _json

    fake = tmp_path / "fake_driver"
    fake.mkdir()
    shutil.copy(_json.__file__, fake / "libcuda.so.1")  # any real shared library, named as the driver
    (fake / "load_fake_cuda_driver.py").write_text(FAKE_DRIVER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(EXTRA_PRELOAD_ENV, "load_fake_cuda_driver")
    server = ForkServer(preload=LIGHT_PRELOAD).start()
    try:
        assert not server.ready()
        assert server.problem is not None and "libcuda.so" in server.problem
        sup = supervisor(tmp_path / "study", server)
        (tmp_path / "study").mkdir()
        done = sup.run(plans(tmp_path / "study", [(job_writes_result, ()), (job_writes_result, ())]))
    finally:
        server.close()
    assert [f.outcome.status for f in done] == ["completed", "completed"]
    m = manifest.load(tmp_path / "study")
    assert m is not None and [j["start_method"] for j in m["jobs"]] == ["spawn", "spawn"]
    err = capfd.readouterr().err
    assert err.count("llem: warning: the fork server (zygote) is unavailable") == 1 and "libcuda.so" in err


def test_text_the_zygote_buffered_while_preloading_is_not_repeated_by_each_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    chatty = tmp_path / "chatty"
    chatty.mkdir()
    (chatty / "chatty_preload.py").write_text('print("hello from a preloaded library", end="")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(chatty), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(EXTRA_PRELOAD_ENV, "chatty_preload")
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # stdout to a file: block-buffered, as users have it
    server = ForkServer(preload=LIGHT_PRELOAD).start()
    try:
        for _ in range(3):
            assert start_job("fork", time.sleep, (0,), tmp_path, server).wait() == 0
    finally:
        server.close()
    assert capfd.readouterr().out.count("hello from a preloaded library") == 1


def job_kills_its_zygote(job_dir: str) -> None:
    """Job 0 of the zygote-death test: SIGKILLs its parent, then waits to be stopped."""
    Path(job_dir, "result.json").write_text(json.dumps({"status": "running", "identity": {"pid": os.getpid()}}))
    parent = psutil.Process(os.getppid())
    assert "llem.launch.zygote" in parent.cmdline(), f"not forked: parent is {parent.cmdline()}"
    parent.kill()
    time.sleep(30)  # PR_SET_PDEATHSIG: SIGTERM ends this


def test_zygote_death_stops_its_job_and_the_study_goes_on_by_spawn(tmp_path: Path, zygote: ForkServer,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    sup = supervisor(tmp_path, zygote)
    done = sup.run(plans(tmp_path, [(job_kills_its_zygote, ()), (job_writes_result, ()), (job_writes_result, ())]))
    assert [f.outcome.status for f in done] == ["failed", "completed", "completed"]
    assert done[0].outcome.exit_signal == "SIGTERM"  # what PR_SET_PDEATHSIG sent it
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in (1, 2)]
    assert [r["ppid"] for r in res] == [os.getpid(), os.getpid()]  # spawned by the launcher
    m = manifest.load(tmp_path)
    assert m is not None and [j["start_method"] for j in m["jobs"]] == ["fork", "spawn", "spawn"]
    err = capfd.readouterr().err
    assert err.count("llem: warning: the fork server (zygote) is unavailable: it died") == 1


def test_timeout_kills_and_records_reason(tmp_path: Path, zygote: ForkServer) -> None:
    sup = supervisor(tmp_path, zygote, LaunchSettings(timeout_s=1.0, kill_grace_s=1.0))
    done = sup.run(plans(tmp_path, [(job_writes_result, (60.0,)), (job_writes_result, (0.0,))]))
    assert [f.outcome.status for f in done] == ["failed", "completed"]  # the study went on
    data = json.loads((tmp_path / "0" / "result.json").read_text())
    assert data["status"] == "failed" and data["error"]["reason"] == "timeout"
    assert "hydra.launcher.timeout_s=1" in data["error"]["message"]
    assert not psutil.pid_exists(done[0].pid)


def test_gpu_slots_run_jobs_side_by_side_each_pinned(tmp_path: Path, zygote: ForkServer) -> None:
    seen: list[Any] = []

    def probe(refs: Any) -> Any:
        seen.append(refs)
        return healthy(refs)

    sup = supervisor(tmp_path, zygote, LaunchSettings(gpus_per_job=1), [("0",), ("1",)], probe=probe)
    done = sup.run(plans(tmp_path, [(job_writes_result, (2.0,)), (job_writes_result, (2.0,))]))
    assert all(f.outcome.status == "completed" for f in done)
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(2)]
    assert sorted(r["environment"]["cuda_visible_devices"] for r in res) == ["0", "1"]
    assert [r["ppid"] for r in res] == [zygote.pid, zygote.pid]  # both forked, each with its own slot's env
    assert res[0]["t0"] < res[1]["t1"] and res[1]["t0"] < res[0]["t1"]  # they overlapped
    assert sorted(map(tuple, seen)) == [("0",), ("1",)]  # each health check looked at its own GPU
    assert res[0]["environment"]["health"]["gpus"][0]["ref"] in ("0", "1")


def test_gap_is_waited_between_jobs_with_a_countdown(tmp_path: Path, zygote: ForkServer) -> None:
    out = io.StringIO()
    sup = supervisor(tmp_path, zygote, gaps=Gaps(config_gap_s=0.5, cycle_gap_s=1.0), out=out)
    sup.run(plans(tmp_path, [(job_writes_result, ()), (job_writes_result, ()), (job_writes_result, ())],
                  cycles=[0, 0, 1]))
    res = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(3)]
    assert res[1]["t0"] - res[0]["t1"] >= 0.5  # config gap
    assert res[2]["t0"] - res[1]["t1"] >= 1.0  # cycle gap
    text = out.getvalue()
    assert "waiting 1s (config gap)" in text and "waiting 1s (cycle gap)" in text


def test_on_unhealthy_abort_starts_nothing(tmp_path: Path, zygote: ForkServer) -> None:
    def busy(refs: Any) -> Any:
        return [health.GpuState(ref="0", memory_used_mib=30000.0)], None

    sup = supervisor(tmp_path, zygote, LaunchSettings(on_unhealthy="abort"), probe=busy)
    with pytest.raises(LaunchAborted) as e:
        sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert e.value.code == 3 and "30000 MiB in use" in e.value.message
    m = manifest.load(tmp_path)
    assert m is not None and m["status"] == "aborted" and m["jobs"][0]["status"] == "planned"
    assert not (tmp_path / "0" / "result.json").exists()


def test_on_unhealthy_wait_rechecks_then_runs_and_records_what_it_saw(tmp_path: Path, zygote: ForkServer) -> None:
    calls = []

    def clears(refs: Any) -> Any:
        calls.append(time.monotonic())
        used = 30000.0 if len(calls) < 3 else 10.0
        return [health.GpuState(ref="0", memory_used_mib=used)], None

    settings = LaunchSettings(on_unhealthy="wait", health_poll_s=0.3, health_wait_max_s=10)
    sup = supervisor(tmp_path, zygote, settings, probe=clears)
    done = sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert done[0].outcome.status == "completed" and len(calls) == 3
    assert calls[2] - calls[0] >= 0.5
    res = json.loads((tmp_path / "0" / "result.json").read_text())
    assert res["environment"]["health"]["ok"] is True


def test_on_unhealthy_wait_is_bounded_and_warn_is_recorded(tmp_path: Path, zygote: ForkServer) -> None:
    def busy(refs: Any) -> Any:
        return [health.GpuState(ref="0", memory_used_mib=30000.0, processes=[{"pid": 1, "used_mib": 1.0}])], None

    settings = LaunchSettings(on_unhealthy="wait", health_poll_s=0.2, health_wait_max_s=0.5)
    sup = supervisor(tmp_path, zygote, settings, probe=busy)
    t0 = time.monotonic()
    done = sup.run(plans(tmp_path, [(job_writes_result, ())]))
    assert time.monotonic() - t0 >= 0.5 and done[0].outcome.status == "completed"  # it waited, then ran
    h = json.loads((tmp_path / "0" / "result.json").read_text())["environment"]["health"]
    assert not h["ok"] and any("still unhealthy" in p for p in h["problems"])
    assert any("foreign process(es) 1" in p for p in h["problems"])
    m = manifest.load(tmp_path)
    assert m is not None and m["jobs"][0]["health"]["ok"] is False


def test_sigterm_on_the_launcher_stops_the_job_and_exits_130(tmp_path: Path, zygote: ForkServer) -> None:
    sup = supervisor(tmp_path, zygote, LaunchSettings(kill_grace_s=5))

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


def test_a_job_that_cannot_be_prepared_fails_alone(tmp_path: Path, zygote: ForkServer) -> None:
    ok = plans(tmp_path, [(job_writes_result, ()), (job_writes_result, ())])
    bad = Finished(0, 0, outcome.Outcome("failed", "config", {"type": "X"}, None, None, False))
    sup = supervisor(tmp_path, zygote)
    done = sup.run([lambda: bad, ok[1]])
    assert [f.outcome.status for f in done] == ["failed", "completed"]


def test_countdown_rewrites_one_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    t0 = time.monotonic()
    countdown(1.2, "config gap", out)
    assert time.monotonic() - t0 >= 1.1  # it counted the gap down, not past it
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 2 and "config gap: next job in 2s" in text


@pytest.mark.parametrize("kind", ["fork", "spawn"])
def test_child_dies_with_its_parent(kind: str, tmp_path: Path) -> None:
    """kill -9 of the launcher: the job process gets SIGTERM (PR_SET_PDEATHSIG), no orphan measures on;
    a forked job's zygote dies with the launcher, and the job with its zygote."""
    pidfile = tmp_path / "child"
    payload = tmp_path / "p.pkl"
    payload.write_bytes(cloudpickle.dumps((time.sleep, (60,), {})))
    paths = f"*map(__import__('pathlib').Path, {[str(payload), str(tmp_path / 'r'), str(tmp_path / 'f')]!r})"
    start = (f"z=ForkServer(preload={LIGHT_PRELOAD!r}).start()\np=z.run({paths}, env)\nzpid=z.pid\n" if kind == "fork"
             else f"p=spawn(child_argv({paths}), env)\nzpid=p.pid\n")
    script = ("import os,sys,time\n"
              "from llem.launch.process import spawn, child_argv, child_env\n"
              "from llem.launch.zygote import ForkServer\n"
              "env=child_env(os.environ, {'LLEM_LAUNCH_PARENT_PID': str(os.getpid())})\n"
              + start +
              f"open({str(pidfile)!r},'w').write(f'{{p.pid}} {{zpid}}')\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    procs = [psutil.Process(int(pid)) for pid in set(pidfile.read_text().split())]
    time.sleep(0.5)  # let the child install its death signal
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, "job process (or its zygote) survived its launcher"
