"""Progress of long preparations (prompts, tokenization): never inside the measurement window.

`Progress(total, what)` stays silent for the first `QUIET_S` seconds (short jobs print nothing). After
that, on a terminal (stderr is a TTY) it redraws one bar line at most every 0.5 s; otherwise (a log
file, a batch job) it writes a plain `llem progress: <what>: i/total (p %), ETA` line every `LOG_EVERY_S` seconds.
`step()` costs a counter increment and, every 64 steps, one clock read.
"""

from __future__ import annotations

import sys
import time

QUIET_S = 2.0
LOG_EVERY_S = 10.0


class Progress:
    def __init__(self, total: int, what: str, stream: object = None) -> None:
        self.total, self.what = int(total), what
        self.stream = stream if stream is not None else sys.stderr
        self.i = 0
        self.t0 = self._last = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = False

    def step(self, k: int = 1) -> None:
        self.i += k
        if self.i & 63:
            return
        now = time.monotonic()
        if now - self.t0 < QUIET_S or now - self._last < (0.5 if self.tty else LOG_EVERY_S):
            return
        self._last = now
        self.show_value(now)

    def show_value(self, now: float, end: str = "") -> None:
        frac = self.i / self.total if self.total else 1.0
        elapsed = now - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        text = f"{self.what}: {self.i}/{self.total} ({100 * frac:.0f} %), {elapsed:.0f} s, ETA {eta:.0f} s"
        if self.tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\rllem progress: [{bar:<30}] {text}{end}")  # type: ignore[attr-defined]
        else:
            self.stream.write(f"llem progress: {text}\n")  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.show_value(time.monotonic(), "\n" if self.tty else "")
