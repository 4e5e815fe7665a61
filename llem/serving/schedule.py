"""The client-side scheduler of a serving job: send each request at its scheduled arrival time.

Backend-neutral: a serving backend gives `drive` a `send(index)` coroutine that hands request
`index` to its engine (in-process AsyncLLM, an HTTP server, ...), streams the answer and returns its
`RequestRecord` (t_submit = the instant it handed the request over, token_times = each streamed
token's receipt time). `drive` stamps `t_scheduled` (the arrival time the process gave it), so the
scheduler's own lateness is `t_submit - t_scheduled`, recorded per request. `max_concurrency` holds
a due request until a slot frees (as vLLM's serving benchmark does); its wait shows as lateness.

Clock: `time.perf_counter()`, the measurement window's clock. Pure asyncio, no threads: nothing of
ours runs between sends but the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from llem.measure.latency import RequestRecord

SendFn = Callable[[int], Awaitable[RequestRecord]]
LEAD_S = 0.002  # the first arrival is this long after drive() starts: room to create the first task


async def drive(offsets: Sequence[float], send: SendFn, max_concurrency: int | None = None,
                t0: float | None = None) -> list[RequestRecord]:
    """Send request i at t0 + offsets[i]; return every request's record, in index order.

    A `send` that raises gives a record with `error` set (no first token, zero output tokens)
    instead of failing the run: a serving result reports failed requests beside the others."""
    start = (time.perf_counter() + LEAD_S) if t0 is None else t0
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    records: list[RequestRecord | None] = [None] * len(offsets)

    async def one(i: int, t_scheduled: float) -> None:
        t_call = time.perf_counter()
        try:
            rec = await send(i)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed request is a result, not a crash
            rec = RequestRecord(index=i, input_tokens=0, output_tokens=0, t_submit=t_call, t_first_token=None,
                                t_end=time.perf_counter(), error=f"{type(e).__name__}: {e}")
        finally:
            if slots is not None:
                slots.release()
        rec.t_scheduled = t_scheduled
        records[i] = rec

    tasks = []
    try:
        for i, offset in enumerate(offsets):
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots is not None:
                await slots.acquire()
            tasks.append(asyncio.create_task(one(i, due)))
        if tasks:
            await asyncio.gather(*tasks)
    finally:  # interrupted (Ctrl-C, timeout): cancel what is still in flight, so no request outlives the run
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return [r for r in records if r is not None]


def lateness_s(records: Sequence[RequestRecord]) -> list[float]:
    """Send − scheduled arrival per request (the scheduler's lateness, plus any max_concurrency wait)."""
    return [r.t_submit - r.t_scheduled for r in records if r.t_scheduled is not None]
