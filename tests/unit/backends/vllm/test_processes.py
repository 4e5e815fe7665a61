"""llem.backends.vllm.processes: the processes an engine start leaves (found as new descendants, the
multiprocessing resource tracker excluded) are killed with their children and reaped (real processes)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from llem.backends.vllm import processes

# An "engine core" that starts a "worker" of its own, prints the worker's pid and sleeps.
ENGINE = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
          "print(w.pid, flush=True); time.sleep(600)")


def _dies(pid: int, within_s: float = 30.0) -> bool:
    """True once `pid` is gone or a zombie (a hang guard, not a speed limit)."""
    try:
        proc = psutil.Process(pid)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            time.sleep(0.01)
    except psutil.NoSuchProcess:
        return True
    return False


def test_started_since_finds_only_the_new_processes_and_kill_all_reaps_them() -> None:
    old = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    left: list[int] = []  # what a failed run must not leave behind
    try:
        before = set(processes.descendants())
        assert old.pid in before
        engine = subprocess.Popen([sys.executable, "-c", ENGINE], stdout=subprocess.PIPE, text=True)
        worker = int(engine.stdout.readline())  # type: ignore[union-attr]
        left += [engine.pid, worker]
        started = processes.started_since(before)
        assert set(started) == {engine.pid, worker}  # the older child is not the engine's
        processes.kill_all({engine.pid: started[engine.pid]}, timeout_s=30)  # the worker goes with its parent
        assert not psutil.pid_exists(engine.pid)  # killed and reaped (by kill_all, not left a zombie)
        engine.wait(timeout=30)
        assert _dies(worker)  # SIGKILL to the worker too (it reaches the process a moment later)
        assert processes.started_since(before) == {}
    finally:
        old.stdin.close()  # type: ignore[union-attr]
        old.wait(timeout=30)
        for pid in left:
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


def test_the_resource_tracker_is_not_the_engines(monkeypatch) -> None:  # noqa: ANN001
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        monkeypatch.setattr(processes, "resource_tracker_pid", lambda: child.pid)
        assert child.pid not in processes.started_since(set())
        monkeypatch.setattr(processes, "resource_tracker_pid", lambda: None)
        assert child.pid in processes.started_since(set())
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=30)


def test_kill_all_of_nothing_or_of_a_process_already_gone_is_quiet() -> None:
    processes.kill_all({})
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(p.pid)
    p.wait()
    processes.kill_all({p.pid: proc}, timeout_s=5)
