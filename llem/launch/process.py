"""Job processes: start each in its own process group, wait without polling, kill whole trees.

The parent must stay idle while a job measures (its CPU time would pollute CPU energy), so waiting
blocks in the kernel on pidfds (Linux >= 5.3: `os.pidfd_open` + epoll); the only fallback, for
systems without pidfds, wakes every `FALLBACK_POLL_S`. A job is a `JobProcess`: a Popen (spawned) or
a llem.launch.zygote.ForkedJob (forked by the zygote); pidfds work for both, children or not.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Protocol

import psutil

FALLBACK_POLL_S = 0.5


class JobProcess(Protocol):
    """What the launcher needs of a job process (subprocess.Popen has it)."""

    pid: int
    returncode: Optional[int]

    def poll(self) -> Optional[int]: ...

    def wait(self, timeout: Optional[float] = None) -> int: ...


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Optional[Path] = None) -> subprocess.Popen[bytes]:
    """Start a job in a new session (its own process group), so a tree kill reaches its children and
    the terminal's Ctrl-C reaches only the parent, which then decides what to do with the job."""
    return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(returncode: Optional[int]) -> tuple[Optional[int], Optional[str]]:
    """Popen.returncode → (exit_code, exit_signal name); a negative returncode means a signal."""
    if returncode is None:
        return None, None
    if returncode < 0:
        return None, signal_name(-returncode)
    return returncode, None


class Waiter:
    """Blocks until one of its processes exits or a timeout passes (no busy loop)."""

    def __init__(self) -> None:
        self._pidfd = hasattr(os, "pidfd_open")
        self._selector = selectors.DefaultSelector() if self._pidfd else None
        self._fds: dict[int, int] = {}  # pid -> pidfd
        self._procs: dict[int, JobProcess] = {}

    def add(self, proc: JobProcess) -> None:
        self._procs[proc.pid] = proc
        if self._selector is not None:
            try:
                fd = os.pidfd_open(proc.pid)
            except OSError:  # kernel without pidfd support: fall back for this process
                return
            self._fds[proc.pid] = fd
            self._selector.register(fd, selectors.EVENT_READ, proc.pid)

    def remove(self, proc: JobProcess) -> None:
        self._procs.pop(proc.pid, None)
        fd = self._fds.pop(proc.pid, None)
        if fd is not None and self._selector is not None:
            self._selector.unregister(fd)
            os.close(fd)

    def wait(self, timeout_s: Optional[float]) -> list[JobProcess]:
        """Processes that have exited (not yet reaped: their pid and group stay valid until `reap`).
        Returns early, possibly empty, when `timeout_s` passes."""
        if not self._procs:
            if timeout_s:
                time.sleep(timeout_s)
            return []
        exited = [p for pid, p in self._procs.items() if pid not in self._fds and p.poll() is not None]
        if exited:
            return exited
        unpolled = len(self._fds) < len(self._procs)
        t = timeout_s if not unpolled else min(timeout_s or FALLBACK_POLL_S, FALLBACK_POLL_S)
        if self._selector is not None and self._fds:
            events = self._selector.select(None if t is None else max(t, 0.0))
            exited = [self._procs[key.data] for key, _ in events]
        else:
            time.sleep(max(t or 0.0, 0.0))
        exited += [p for pid, p in self._procs.items() if pid not in self._fds and p.poll() is not None]
        return exited

    def close(self) -> None:
        for proc in list(self._procs.values()):
            self.remove(proc)
        if self._selector is not None:
            self._selector.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def pid_held(proc: JobProcess) -> bool:
    """True while the job's pid (and so its process group id) cannot have passed to another process:
    not yet reaped. A forked job says so itself (its zygote reaps it, unless the zygote died)."""
    held = getattr(proc, "pid_held", None)
    return bool(held()) if held is not None else proc.returncode is None


def _signal_tree(proc: JobProcess, procs: list[psutil.Process], sig: int) -> None:
    if pid_held(proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the job's process group (its pid: it was started in a new session)
    for p in procs:  # descendants that left the group (setsid) are still ours
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def _wait_exit(proc: JobProcess, timeout_s: float) -> bool:
    """Blocking wait (pidfd) for the job's main process to exit, without reaping it."""
    waiter = Waiter()
    try:
        waiter.add(proc)
        deadline = time.monotonic() + timeout_s
        while True:
            if waiter.wait(max(deadline - time.monotonic(), 0.0)):
                return True
            if time.monotonic() >= deadline:
                return False
    finally:
        waiter.close()


def kill_tree(proc: JobProcess, grace_s: float) -> None:
    """SIGTERM the job and all its descendants; SIGKILL whatever is left after `grace_s`; reap.
    Nothing is signalled by pid once the job was reaped: its pid may belong to another process."""
    if pid_held(proc):
        tree = _descendants(proc.pid)
        _signal_tree(proc, tree, signal.SIGTERM)
        if grace_s > 0:
            _wait_exit(proc, grace_s)
            _, alive = psutil.wait_procs(tree, timeout=0.1)
            tree = alive + (_descendants(proc.pid) if pid_held(proc) else [])
        _signal_tree(proc, tree, signal.SIGKILL)
    reap(proc)


def reap(proc: JobProcess) -> int:
    """Kill stragglers left in the job's group (a worker the job did not stop), then collect the
    exit status. Runs while the exited job is still a zombie, so its group id cannot be reused."""
    if pid_held(proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: the parent's, plus llem's own package root on PYTHONPATH (so the
    child imports the same llem even when the parent runs from a checkout), plus `extra`."""
    env = {**base, **extra}
    root = str(Path(__file__).resolve().parent.parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def child_argv(payload: Path, returned: Path, fault_log: Path) -> list[str]:
    return [sys.executable, "-m", "llem.launch.child", str(payload), str(returned), str(fault_log)]
