"""Fork server ("zygote"): one process per study that imports torch, transformers and llem's job code
once, then forks every job from there, so a job starts in ~0.1 s instead of ~4-5 s of imports.

A forked job is still a fresh process: a new pid in its own session, the job's own environment
(`CUDA_VISIBLE_DEVICES` of its slot, the health report, ...), its own working directory, and a clean
CUDA state, because the zygote never initialises CUDA: it refuses to serve (the launcher then spawns
each job, `python -m llem.launch.child`) if preloading loaded the CUDA driver or NVML, or started a
Python thread. vLLM is not preloaded (its jobs import it themselves). The zygote dies with the launcher
(PR_SET_PDEATHSIG), and its jobs with it, so a `kill -9` of the study leaves nothing measuring.

While a job runs, the zygote sleeps in a blocking read of its request pipe: it uses no CPU. It is the
jobs' parent but, like Popen, reaps a job only when the launcher asks (after the job's pidfd said it
exited), so a job's pid and process group stay valid until then; before reaping it SIGKILLs whatever
is left in the job's group. Protocol: JSON lines on the request pipe, text lines back on the status
pipe: `ready <pid>` | `refused <why>` once, then per request `started <pid>` | `failed <why>` (run)
and `exit <pid> <returncode>` | `unknown <pid>` (reap), returncode as Popen.returncode; `started`
is written by the forked job itself, so the launcher learns its pid even if the zygote dies then.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from llem.launch import child
from llem.launch.process import child_env, signal_name

MODULE = "llem.launch.zygote"
NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"  # torch.cuda.is_available() via NVML, without cuInit
EXTRA_PRELOAD_ENV = "LLEM_TEST_ZYGOTE_EXTRA_PRELOAD"  # test-only: more "module[:attr]" entries, comma-separated

# What a pytorch job imports before its measurement (entries: "module" or "module:attr").
# Not Hydra's plugin scan (Plugins.instance()): it re-executes plugin modules, so the launcher's config
# classes in a job's config stop matching the importable ones and pickling the job's return value walks
# every module (~1 s, importing half of transformers).
DEFAULT_PRELOAD = (
    "torch",
    "transformers:AutoConfig", "transformers:AutoModelForCausalLM", "transformers:AutoTokenizer",
    "cloudpickle", "hydra.core.utils",
    # what unpickling a job's Hydra state imports (the plugins and config sources the launcher has loaded)
    "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source", "hydra._internal.core_plugins.structured_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra_plugins.llem_launcher.llem_launcher", "hydra_plugins.llem_sweeper.llem_sweeper",
    "hydra_plugins.hydra_submitit_launcher.config", "hydra_plugins.hydra_ray_launcher._config",
    "llem.app", "llem.job", "llem.backends.pytorch.backend",
    "llem.energy.meters.nvml.meter", "llem.energy.meters.rapl.meter", "pynvml", "pandas", "pyarrow.parquet",
)
READY_TIMEOUT_S = 600.0
ORPHAN_GRACE_S = 10.0  # launcher gone: how long the zygote lets its jobs record `interrupted`


def supported() -> bool:
    """Fork servers need Linux (fork, pidfds, PR_SET_PDEATHSIG, /proc/self/maps)."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(os, "fork")


def wanted(fresh_process: str) -> bool:
    """Whether jobs are to be forked from a zygote: hydra.launcher.fresh_process=auto|fork on a system that can."""
    return fresh_process != "spawn" and supported()


# -- the zygote process ----------------------------------------------------------------------------
def preload(entries: Sequence[str]) -> None:
    """Import each entry; what fails (an optional plugin not installed) is left to the job, which
    then imports it itself or reports the real error."""
    for entry in entries:
        module, _, attr = entry.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)  # lazy modules (transformers) import on attribute access
        except Exception:
            continue


def fork_hazard() -> Optional[str]:
    """Why forking jobs from this process would be unsafe, or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as e:
        return f"cannot check for the CUDA driver in /proc/self/maps ({e})"
    if "/libcuda.so" in maps:
        return "the CUDA driver (libcuda.so) was loaded while preloading; forked jobs would inherit it"
    if "/libnvidia-ml.so" in maps:
        return "NVML (libnvidia-ml.so) was loaded while preloading; forked jobs would inherit its state"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised while preloading; forked jobs would inherit its state"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        return f"preloading started Python threads ({names}), which a forked job would not have"
    return None


def _send(fd: int, line: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        os.write(fd, (line + "\n").encode())


def _reap(pid: int) -> Optional[int]:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # stragglers in the job's group; the job itself is a zombie by now
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def _become_job(req: dict[str, Any], zygote_pid: int) -> tuple[Path, Path, Path]:
    """In the forked child: the job's environment, directory and argv, as a spawned job has them."""
    env = {str(k): str(v) for k, v in req["env"].items()}
    env[child.PARENT_PID_ENV] = str(zygote_pid)
    os.environ.clear()  # putenv/unsetenv: C libraries (CUDA) read the job's values too
    os.environ.update(env)
    if req.get("cwd"):
        os.chdir(req["cwd"])
    paths = (Path(req["payload"]), Path(req["returned"]), Path(req["fault"]))
    sys.argv = [child.__file__, *map(str, paths)]
    numpy = sys.modules.get("numpy")
    if numpy is not None:  # a fresh process seeds numpy's global generator from the OS; so does this one
        numpy.random.seed()
    gc.enable()
    return paths


def _fork(req: dict[str, Any], req_fd: int, status_fd: int) -> tuple[int, Optional[tuple[Path, Path, Path]]]:
    """Fork one job. In the child: (0, its paths); in the zygote, after replying: (pid or -1, None)."""
    sync_r, sync_w = os.pipe()
    zygote_pid = os.getpid()
    for stream in (sys.stdout, sys.stderr):  # else text buffered in the zygote would print once per job
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(sync_r)
        os.close(sync_w)
        _send(status_fd, f"failed fork: {e}")
        return -1, None
    if pid == 0:
        os.close(sync_r)
        os.setsid()  # own session and process group, as spawn's start_new_session: a tree kill reaches it
        # The job announces itself, so the launcher knows it even if the zygote dies right now (and
        # never starts the same job a second time by spawn).
        _send(status_fd, f"started {os.getpid()}")
        os.close(sync_w)  # lets the zygote go on
        os.close(req_fd)
        os.close(status_fd)
        return 0, _become_job(req, zygote_pid)
    os.close(sync_w)
    os.read(sync_r, 1)  # EOF once the child has said "started" (or died)
    os.close(sync_r)
    return pid, None


def serve(req_fd: int, status_fd: int) -> Optional[tuple[Path, Path, Path]]:
    """Answer requests until the launcher closes the pipe (returns None), or, in a forked job,
    return that job's (payload, return, fault log) paths."""
    jobs: set[int] = set()
    with open(req_fd, "rb", closefd=False) as requests:
        for line in requests:
            req = json.loads(line)
            if req["op"] == "run":
                gc.freeze()  # objects made since the last fork: never scanned (copied) by the job's gc
                pid, job = _fork(req, req_fd, status_fd)
                if job is not None:
                    return job
                if pid > 0:
                    jobs.add(pid)
            elif req["op"] == "reap":
                pid = int(req["pid"])
                rc = _reap(pid)
                jobs.discard(pid)
                _send(status_fd, f"unknown {pid}" if rc is None else f"exit {pid} {rc}")
    # The launcher left with jobs running: it was killed (`kill -9`). Its death signal kills this
    # process in a moment, and theirs (PR_SET_PDEATHSIG) sends each job SIGTERM, which it records as
    # `interrupted`. Send the same SIGTERM now, in case this process lives on, and never SIGKILL a job
    # before it could write that.
    for pid in jobs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + ORPHAN_GRACE_S
    for pid in jobs:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)  # the launcher is gone: nothing is being measured any more
        else:
            _reap(pid)
    return None


def main(argv: list[str]) -> int:
    req_fd, status_fd = int(argv[0]), int(argv[1])
    entries = [e for e in (argv[2] if len(argv) > 2 else "").split(",") if e]
    entries += [e for e in os.environ.get(EXTRA_PRELOAD_ENV, "").split(",") if e]
    child.install_exit_hook()  # before preloading, so it stays the jobs' last atexit handler
    child.die_with_parent(signal.SIGKILL)
    gc.disable()  # nothing to collect while importing; freezing below keeps the jobs' pages shared
    preload(entries)
    problem = fork_hazard()
    if problem:
        _send(status_fd, f"refused {problem}")
        os._exit(0)
    gc.freeze()
    _send(status_fd, f"ready {os.getpid()}")
    job = serve(req_fd, status_fd)
    if job is None:
        os._exit(0)  # the zygote: nothing to tear down
    return child.run_job_process(*job)  # a forked job, from here on exactly a spawned job's life


# -- the launcher's side -----------------------------------------------------------------------------
class ForkServerGone(RuntimeError):
    """The zygote cannot start this job (it died, or fork failed); the launcher spawns it instead."""


class ForkServer:
    """The launcher's handle on its zygote: start it early, wait for `ready()` before the first job,
    `run()` jobs, `close()` at the end. `problem` says why it does not serve (None while it does)."""

    def __init__(self, preload: Optional[Sequence[str]] = None, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.preload = tuple(DEFAULT_PRELOAD if preload is None else preload)
        self.ready_timeout_s = ready_timeout_s
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.problem: Optional[str] = None
        self._ready = False
        self._req = self._status = -1
        self._buf = b""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ForkServer:
        """Start preloading in the background (returns at once), in the launcher's environment:
        what libraries read from it at import time is what a spawned job would have read."""
        req_r, self._req = os.pipe()
        self._status, status_w = os.pipe()
        env = child_env(os.environ, {child.PARENT_PID_ENV: str(os.getpid()), NVML_CHECK_ENV: "1"})
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", MODULE, str(req_r), str(status_w), ",".join(self.preload)],
                                         env=env, stdin=subprocess.DEVNULL, pass_fds=(req_r, status_w),
                                         start_new_session=True, close_fds=True)
        except OSError as e:
            self._gone(f"it could not be started ({e})")
        finally:
            os.close(req_r)
            os.close(status_w)
        return self

    def ready(self) -> bool:
        """Block until the zygote finished preloading: True, or False if it refused or died."""
        if self._ready or self.problem is not None:
            return self._ready
        try:
            line = self._line(self.ready_timeout_s)
        except TimeoutError:
            self._gone(f"preloading took longer than {self.ready_timeout_s:g} s")
            return False
        if line is not None and line.startswith("ready "):
            self._ready = True
        elif line is not None and line.startswith("refused "):
            self._gone(f"it refused to serve: {line.removeprefix('refused ')}")
        else:
            self._gone(f"it exited while preloading ({self._exit_text()})", kill=False)
        return self._ready

    def run(self, payload: Path, returned: Path, fault_log: Path, env: Mapping[str, str],
            cwd: Optional[Path] = None) -> ForkedJob:
        """Fork one job (after `ready()`); raises ForkServerGone if the zygote cannot."""
        if not self.ready():
            raise ForkServerGone(self.problem or "not ready")
        reply = self._ask({"op": "run", "payload": str(payload), "returned": str(returned), "fault": str(fault_log),
                           "env": dict(env), "cwd": str(cwd or os.getcwd())})
        if reply.startswith("started "):
            return ForkedJob(int(reply.split()[1]), self)
        raise ForkServerGone(reply.removeprefix("failed "))

    def reap(self, pid: int) -> Optional[int]:
        """The exit status of an exited job; None if the zygote is gone (the job's status went to init)."""
        try:
            reply = self._ask({"op": "reap", "pid": pid})
        except ForkServerGone:
            return None
        parts = reply.split()
        return int(parts[2]) if parts[0] == "exit" and len(parts) == 3 else None

    def close(self) -> None:
        """End the zygote (it exits when its request pipe closes) and release the pipes."""
        for fd in (self._req, self._status):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._req = self._status = -1
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=0.2 if self._ready else 0)  # still importing: no need to wait
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._ready = False
        if self.problem is None:
            self.problem = "closed"

    # -- pipes -------------------------------------------------------------------------------------
    def _gone(self, why: str, kill: bool = True) -> None:
        """Not serving (before any job): refused, stuck importing, or dead."""
        self._ready = False
        if self.problem is None:
            self.problem = why
        if kill and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _exit_text(self) -> str:
        if self.proc is None:
            return "not started"
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        return signal_name(-rc) if rc < 0 else f"exit code {rc}"

    def _ask(self, request: dict[str, Any]) -> str:
        if self._req < 0:
            raise ForkServerGone(self.problem or "closed")
        data = (json.dumps(request) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._req, data):]
            line = self._line(None)
        except OSError:  # BrokenPipeError: it died
            line = None
        if line is None:
            self._ready = False
            self.problem = self.problem or f"it died ({self._exit_text()})"
            raise ForkServerGone(self.problem)
        return line

    def _line(self, timeout_s: Optional[float]) -> Optional[str]:
        """One status line (blocking, in the kernel); None at EOF."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._status], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(self._status, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()


class ForkedJob:
    """Popen-like handle (pid, returncode, poll, wait) of a job the zygote forked. Not our child:
    its exit is seen on a pidfd, and its status comes from the zygote, which reaps it on request."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None
        self.orphaned = False  # the zygote died first: returncode is what PR_SET_PDEATHSIG sent
        self.args = [MODULE, str(pid)]
        self._server = server
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(pid)  # valid while the zygote lives: it keeps the pid until asked
        except ProcessLookupError:  # the zygote died at once and init already reaped the job
            self.orphaned, self.returncode = True, -signal.SIGTERM

    def pid_held(self) -> bool:
        """Not reaped yet: the zygote keeps an exited job until asked; after the zygote died, init
        reaps the job as soon as it exits."""
        return self.returncode is None and (self._server.alive() or not self._exited(0.0))

    def poll(self) -> Optional[int]:
        if self.returncode is None and self._exited(0.0):
            self._collect()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            if not self._exited(timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._collect()
        assert self.returncode is not None
        return self.returncode

    def _exited(self, timeout_s: Optional[float]) -> bool:
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout_s is None else int(timeout_s * 1000)))

    def _collect(self) -> None:
        rc = self._server.reap(self.pid)
        # zygote gone: PR_SET_PDEATHSIG stopped the job with SIGTERM; init collected its status
        self.orphaned = rc is None
        self.returncode = rc if rc is not None else -signal.SIGTERM
        os.close(self._pidfd)
        self._pidfd = -1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
