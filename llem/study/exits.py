"""How a study's outcome reaches the caller: exit codes on the command line, exceptions in the API.

`python -m llem -m ...` runs the multirun inside Hydra's `run_and_report`, which turns every exception
into exit code 1 and a stack trace. There llem prints its one line and exits with the documented code
(2 invalid settings, 1 failed jobs). Called through the API (`Hydra.multirun`, a notebook, a test),
the same outcome is an exception the caller can catch (a `LlemError`; `exit_code` says which).
Here, not under hydra_plugins/: Hydra's plugin scan re-executes those modules, which would make a
second `StudyFailed` class that a caller's `except` does not match. No Hydra import.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from llem.errors import LlemError


class StudyFailed(LlemError):
    """Some jobs of the study failed (the others ran); `python -m llem -m` exits with code 1."""

    exit_code = 1

    def __init__(self, message: str, failed: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.failed = failed
        self.total = total


def under_hydra_cli() -> bool:
    """True when Hydra's command-line wrapper (hydra._internal.utils.run_and_report) is our caller."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run_and_report" and frame.f_globals.get("__name__") == "hydra._internal.utils":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def exit_or_raise(error: BaseException, printed: bool = False) -> NoReturn:
    """On the command line: `llem: <message>` (unless already printed) and the error's exit code;
    in the API: raise the error."""
    if under_hydra_cli():
        if not printed:
            text = str(error).replace("\n", "\n  ")
            print(f"llem: {text}", file=sys.stderr, flush=True)
        raise SystemExit(getattr(error, "exit_code", 1))
    raise error
