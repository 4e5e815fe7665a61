"""A background sampler thread shared by the sampling meters (NVML, RAPL).

It blocks on `Event.wait` between samples (no busy loop), keeps a fixed schedule at `hz` and stamps
every sample with `time.perf_counter()` — the clock the latency records and phases use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


class Sampler:
    """Calls `read(t)` (returns one row per device) at `hz` in its own thread and keeps the rows.

    The edge samples are taken in the caller's thread right before `start` returns and first thing in
    `stop`, so the series brackets the window tightly even when the sampler thread is slow to be
    scheduled (a busy host, OpenMP threads spinning); a lock keeps the two threads' reads apart.
    """

    def __init__(self, read: Callable[[float], list[Row]], hz: float, name: str = "llem-energy-sampler", *,
                 clock: Callable[[], float] = time.perf_counter, threaded: bool = True) -> None:
        if hz <= 0:
            raise ValueError(f"sample rate must be > 0 Hz, got {hz}")
        self.read = read
        self.interval_s = 1.0 / hz
        self.name = name
        self.clock = clock  # injectable so the GPU simulator's clock can drive a whole window in tests
        self.threaded = threaded  # False: the caller takes every sample with sample_now (tests)
        self.rows: list[Row] = []
        self.errors = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()
        self._closed = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_now(self) -> None:
        """One sample in the calling thread; ignored once the series is closed."""
        with self._lock:
            if self._closed:
                return
            t = self.clock()
            try:
                self.rows.extend(self.read(t))
            except Exception as e:  # a flaky sensor read must not end the job; it is counted and reported
                self.errors += 1
                if self.first_error is None:
                    self.first_error = f"{type(e).__name__}: {e}"

    def _loop(self) -> None:
        t_next = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(0.0, t_next - time.perf_counter())):
            self.sample_now()
            t_next += self.interval_s
            now = time.perf_counter()
            if t_next < now:  # fell behind (a slow read): skip missed slots rather than burst
                t_next = now + self.interval_s

    def start(self) -> None:
        self.rows = []
        self.errors = 0
        self.first_error = None
        self._stop.clear()
        self._closed = False
        if self.threaded:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self.sample_now()  # the opening edge, as late as possible before the window's clock starts

    def stop(self) -> list[Row]:
        """Closing sample first, then stop the thread; returns every row in time order."""
        self.sample_now()
        with self._lock:
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.rows.sort(key=lambda r: r["t_s"])
        return self.rows

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def trapezoid(times: list[float], values: list[float]) -> float:
    """∫ values dt over the samples (values in W → J)."""
    total = 0.0
    for i in range(1, len(times)):
        total += 0.5 * (values[i] + values[i - 1]) * (times[i] - times[i - 1])
    return total


def cumulative_trapezoid(times: list[float], values: list[float]) -> list[float]:
    out = [0.0]
    for i in range(1, len(times)):
        out.append(out[-1] + 0.5 * (values[i] + values[i - 1]) * (times[i] - times[i - 1]))
    return out
