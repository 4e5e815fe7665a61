"""Watching the server while requests run: is it still there when requests fail, and what the run keeps
when it is gone.

Event-driven, no polling while requests succeed: a request failing with a connection, truncation or
timeout code makes llem ask (process alive? /health?) at most once per HEALTH_EVERY_S. A server that is
gone aborts the run: the requests measured so far are kept, the others are marked failed (`cut_off`).

Pure asyncio and stdlib; the server handle (`llem.serving.server.ManagedServer`, None for a running
server llem did not start) and the client's health check are passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from llem.measure.latency import RequestRecord

# A failed request with one of these codes makes llem ask whether the server is still there.
ASK_HEALTH = ("connection", "truncated", "timeout")
HEALTH_EVERY_S = 1.0  # at most one health check per second while requests fail
EXIT_WAIT_S = 0.1  # after a failed health check, how often (10 times) to look whether the process has exited


class ServerWatch:
    """Asks whether the server is gone after failed requests; `why` holds the first reason it was."""

    def __init__(self, server: Any, health: Callable[[], Awaitable[tuple[bool, str]]], base_url: str,
                 every_s: float = HEALTH_EVERY_S) -> None:
        self.server = server  # ManagedServer (its process is watched too) or None
        self.health = health  # the client's /health check: (ok, what was seen)
        self.base_url = base_url
        self.every_s = every_s
        self.why: str | None = None
        self.abort = asyncio.Event()
        self._last = -math.inf
        self._checking = asyncio.Lock()

    async def gone(self) -> str | None:
        """Why the server can no longer answer (its process exited, /health fails), or None: it is there."""
        server = self.server

        def exited() -> str | None:
            return server.exited() if server is not None else None

        if (why := exited()) is not None:
            return why
        ok, seen = await self.health()
        if ok:
            return None
        for _ in range(10):  # a killed server's socket can close before its exit is seen: say which it was
            if (why := exited()) is not None:
                return why
            if server is None:
                break
            await asyncio.sleep(EXIT_WAIT_S)
        return f"the server at {self.base_url} fails its health check ({seen})"

    async def after(self, rec: RequestRecord) -> None:
        """After a request: when it failed as a dead server would make it fail, ask (throttled); a server
        that is gone sets `why` and `abort`."""
        if rec.failure not in ASK_HEALTH or self.why:
            return
        async with self._checking:
            if not self.why and time.perf_counter() - self._last >= self.every_s:
                self._last = time.perf_counter()
                why = await self.gone()
                if why:
                    self.why = why
                    self.abort.set()

    async def run(self, task: Awaitable[list[RequestRecord]]) -> list[RequestRecord] | None:
        """`task`'s records, or None when the server was found gone first (the task is then cancelled)."""
        work = asyncio.ensure_future(task)
        stop = asyncio.ensure_future(self.abort.wait())
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not work.done():
            work.cancel()  # drive cancels the requests still in flight
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return None
        return work.result()


def cut_off(done: dict[int, RequestRecord], sent: set[int], offsets: list[float], t0: float,
            why: str) -> list[RequestRecord]:
    """Every planned request's record after the server went away: the measured ones as they are, the
    others failed now ("connection" when cut off in flight, "skipped" when never sent)."""
    t = time.perf_counter()
    records = []
    for i, off in enumerate(offsets):
        rec = done.get(i)
        if rec is None:
            code = "connection" if i in sent else "skipped"
            rec = RequestRecord(index=i, input_tokens=0, output_tokens=0, t_submit=t, t_first_token=None, t_end=t,
                                error=f"{why} ({'cut off in flight' if i in sent else 'never sent'})",
                                failure=code)
        if rec.t_due is None:
            rec.t_due = t0 + off
        records.append(rec)
    return records
