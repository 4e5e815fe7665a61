"""Entry of every job process: `python -m llem.launch.child PAYLOAD RETURN FAULT_LOG` (spawn), or
`run_job_process` in a process forked by the zygote (llem.launch.zygote): both run the same code.

PAYLOAD is a (cloud)pickled `(function, args, kwargs)` written by the launcher; the function's
return value is pickled to RETURN. The process dies with its parent (no orphan keeps measuring after
a `kill -9` of the study), turns SIGTERM into KeyboardInterrupt (so the job records itself as
interrupted and closes its backend), and dumps a Python traceback to FAULT_LOG on a fatal signal.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import faulthandler
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

PARENT_PID_ENV = "LLEM_LAUNCH_PARENT_PID"
PR_SET_PDEATHSIG = 1
EXIT_INTERRUPTED = 130


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: get `sig` when the parent dies, even by SIGKILL. Exits at once if it already has
    (the parent's pid is in PARENT_PID_ENV: after the parent died, getppid() is someone else)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(EXIT_INTERRUPTED)


_interrupted = False


def _interrupt(signum: int, frame: Any) -> None:
    """The first SIGTERM stops the job (it records `interrupted`); later ones (the launcher's tree
    kill after the zygote's death signal, say) must not cut that write short: SIGKILL still ends it."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"job stopped by {signal.Signals(signum).name}")


_exit_code = 1  # what the process exits with unless the job returns normally
_hook_installed = False


def _skip_finalization() -> None:
    """Registered first, so it runs last of the atexit handlers (after non-daemon threads were
    joined and every library's own handler ran): exit without tearing down the interpreter's
    modules, which takes 2-3 s with torch/transformers loaded and writes nothing anyone reads."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_exit_code)


def install_exit_hook() -> None:
    """Call before anything heavy is imported (the zygote calls it before preloading, so its
    forked jobs inherit the hook at the bottom of the atexit stack, as a spawned job has it)."""
    global _hook_installed
    if not _hook_installed:
        atexit.register(_skip_finalization)
        _hook_installed = True


def run_job_process(payload: Path, returned: Path, fault_log: Path) -> int:
    """The job process's whole life after start-up: the exit code it ends with."""
    global _exit_code
    install_exit_hook()
    signal.signal(signal.SIGTERM, _interrupt)  # before die_with_parent: its SIGTERM is then recorded
    die_with_parent()
    fault_file = open(fault_log, "w")  # noqa: SIM115 (must stay open for faulthandler)
    faulthandler.enable(file=fault_file, all_threads=True)
    try:
        with open(payload, "rb") as f:
            function, args, kwargs = pickle.load(f)
        value = function(*args, **kwargs)
    except KeyboardInterrupt:
        _exit_code = EXIT_INTERRUPTED
        return EXIT_INTERRUPTED
    tmp = returned.with_suffix(".tmp")
    try:
        import cloudpickle

        tmp.write_bytes(cloudpickle.dumps(value))
        os.replace(tmp, returned)
    except Exception as e:  # an unpicklable return value must not turn a finished job into a crash
        print(f"llem: job return value not sent to the launcher: {type(e).__name__}: {e}", file=sys.stderr)
    _exit_code = 0
    return 0


def main(argv: list[str]) -> int:
    payload, returned, fault_log = (Path(a) for a in argv[:3])
    return run_job_process(payload, returned, fault_log)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
