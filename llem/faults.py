"""Faults at the top of `python -m llem`: signals to a single run, and any error that reaches the top.

Signals (single run, `python -m llem ...` without -m): SIGINT, SIGTERM (`kill`, `timeout`, `docker stop`,
SLURM's `scancel`) and SIGHUP (the terminal closed) all stop the job the same way: `Interrupted` (a
KeyboardInterrupt) is raised in the main thread, the job records `result.json` with status `interrupted`
and `error.message` naming the signal, and the command prints one `llem:` line and exits 128 + the
signal's number (130, 143, 129). A second signal while the first is being recorded is ignored, so
result.json is always written. A signal llem was started with ignored stays ignored, as Unix expects:
`nohup python -m llem ...` survives the terminal closing (SIGHUP), and a job started in the background of
a non-interactive shell (`... &`) is not stopped by Ctrl-C at that terminal (SIGINT). Studies keep their
launcher's handling (llem/launch), which follows the same rule.

Any other exception that reaches the top prints one `llem:` line too (exit 1; llem's own errors keep
their `exit_code`), with a pointer to `HYDRA_FULL_ERROR=1`, which prints the full traceback as well.
Pure: no Hydra, no torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal; `signum` says which, `exit_code` is 128 + signum."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} (signal {signum}); the job stopped "
                         "before it finished")


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While inside: SIGINT/SIGTERM/SIGHUP raise `Interrupted` once (later ones are ignored, so the job's
    `finally` can write result.json); the previous handlers come back on exit. Main thread only."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen:
            return  # already stopping: let the job record it
        seen.append(signum)
        raise Interrupted(signum)

    previous = {}
    for s in STOP_SIGNALS:
        if signal.getsignal(s) == signal.SIG_IGN:
            continue  # started ignored (nohup: SIGHUP; a background job: SIGINT): stays ignored
        with contextlib.suppress(ValueError, OSError):
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(s, h)


def interrupted_line(e: BaseException, result_file: str | None = None) -> tuple[str, int]:
    """(the one line, exit code) for a KeyboardInterrupt that reached the top."""
    signum = getattr(e, "signum", signal.SIGINT)
    text = str(e) if str(e) else f"interrupted by SIGINT (signal {int(signal.SIGINT)})"
    if result_file:
        text += f" (result.json with status interrupted: {result_file})"
    return text, 128 + int(signum)


def error_line(e: BaseException) -> str:
    """One line for an exception that is not bad input: llem's own errors by their message, anything
    else by its type and first line, with where the traceback can be had."""
    from llem.errors import LlemError

    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = first if isinstance(e, LlemError) and first else f"{type(e).__name__}: {first}" if first else type(e).__name__
    if len(str(e).strip().splitlines()) > 1 and isinstance(e, LlemError):
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text


def exit_one_line(e: BaseException, result_file: str | None = None) -> NoReturn:
    """Print `llem: ...` (the traceback first with HYDRA_FULL_ERROR=1) and exit with the error's code."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if full:
        traceback.print_exception(e)
    if isinstance(e, KeyboardInterrupt):
        line, code = interrupted_line(e, result_file)
    else:
        line, code = error_line(e), int(getattr(e, "exit_code", 1) or 1)
        if result_file:
            line += f" (result.json with status failed: {result_file})"
        if not full:
            line += " [HYDRA_FULL_ERROR=1 prints the traceback]"
    print(f"llem: {line}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(code) from None


