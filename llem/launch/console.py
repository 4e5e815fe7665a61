"""What the launcher prints between jobs: progress lines and gap countdowns (never during a job).

A countdown rewrites one terminal line once per second and sleeps in between; when the output is
not a terminal (a log file, CI) it prints one line and sleeps through the gap.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Optional, TextIO


def fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def progress_text(done: int, total: int, failed: int, elapsed_s: float, label: str = "",
                  index: Optional[int] = None, durations_s: Optional[Sequence[float]] = None) -> str:
    """One line before a job starts: done/total, failures, the job, ETA (llem.launch.progress)."""
    from llem.launch.progress import progress_line

    return "[llem] " + progress_line(done, total, failed, elapsed_s, current=label or None,
                                     current_index=index, durations_s=list(durations_s or []) or None)


def countdown(seconds: float, label: str, stream: Optional[TextIO] = None) -> None:
    """Wait `seconds`, showing the time left on one line; KeyboardInterrupt stops it at once."""
    stream = stream or sys.stdout
    if seconds <= 0:
        return
    end = time.monotonic() + seconds
    tty = hasattr(stream, "isatty") and stream.isatty()
    if not tty:
        print(f"[llem] waiting {fmt_s(math.ceil(seconds))} ({label})", file=stream, flush=True)
        time.sleep(seconds)
        return
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            stream.write(f"\r[llem] {label}: next job in {fmt_s(math.ceil(left))} ")
            stream.flush()
            time.sleep(min(1.0, left - math.floor(left) or 1.0, left))
    finally:
        stream.write("\r\033[K")
        stream.flush()
