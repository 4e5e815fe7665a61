"""The client-side scheduler of a serving job: what each request is and when it is due, and `drive`.

THE SCHEDULE (contract between the arrival process / trace replay and every serving backend):
`Schedule.requests` is a list of `PlannedRequest`, in send order, one per request of the measured pass:
- `offset_s`: due time, seconds after the start of sending (arrivals: vLLM's get_request delays; trace:
  (timestamp − first timestamp in the window) / speedup).
- `item`: index into the workload's payload (the dataset prompt) when `prompt_token_ids` is None.
- `prompt_token_ids`: the exact prompt as token ids of the model's tokenizer (trace replay: exactly the
  trace's input length, shared hash_ids blocks identical); None: the dataset's prompt `item`.
  Over HTTP send it as `prompt` (a list of ints) to /v1/completions, so the server sees exactly these tokens.
- `input_tokens`: len(prompt_token_ids), or the dataset prompt's token count.
- `max_tokens`: exact output length to force (trace: the trace's output length; send `max_tokens` and,
  with `ignore_eos`, `ignore_eos=true` + `min_tokens=max_tokens`); None: the backend's own max_tokens knob.
- `ignore_eos`: True when the output length must be exactly max_tokens (trace replay).
`Schedule` also carries the offered rate and a `info` dict (source, trace window, skipped/clipped counts)
that the result's `serving.schedule` block reports.

Backend-neutral: a serving backend gives `drive` a `send(index)` coroutine that hands request
`index` to its engine (in-process AsyncLLM, an HTTP server, ...), streams the answer and returns its
`RequestRecord` (t_submit = the instant it handed the request over, token_times = each streamed
token's receipt time). `drive` stamps `t_due` (the arrival time the schedule gave it), so the
scheduler's own lateness is `t_submit - t_due`, recorded per request. `max_concurrency` holds
a due request until a slot frees (as vLLM's serving benchmark does); its wait shows as lateness.

Clock: `time.perf_counter()`, the measurement window's clock. Pure asyncio, no threads: nothing of
ours runs between sends but the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llem.measure.latency import RequestRecord


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the schedule (see the module docstring)."""

    index: int  # position in the schedule (= RequestRecord.index)
    offset_s: float  # due this long after sending starts
    item: int = 0  # workload payload index (dataset prompt) when prompt_token_ids is None
    prompt_token_ids: tuple[int, ...] | None = None  # exact prompt tokens (trace replay), else None
    input_tokens: int | None = None  # prompt length in the model's tokenizer, where known
    max_tokens: int | None = None  # exact output length to force; None: the backend's max_tokens knob
    ignore_eos: bool = False  # force exactly max_tokens (ignore_eos + min_tokens)


@dataclass
class Schedule:
    """The measured pass's requests and where they came from."""

    requests: list[PlannedRequest]
    offered_rate_s: float | None  # requests/s asked for (arrivals) or the window's mean rate (trace); None: inf
    info: dict[str, Any] = field(default_factory=dict)  # source, trace window, skipped/clipped counts, ...

    @property
    def offsets(self) -> list[float]:
        return [p.offset_s for p in self.requests]


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

    async def one(i: int, t_due: float) -> None:
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
        rec.t_due = t_due
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
    return [r.t_submit - r.t_due for r in records if r.t_due is not None]


def arrival_schedule(n: int, scenario: Any, seed: int, input_tokens: Sequence[int] = ()) -> Schedule:
    """n requests of the dataset (item i % len(input_tokens)) at vLLM's get_request delays (arrivals.py)."""
    from llem.serving.arrivals import arrival_offsets, offered_rate_s

    s = scenario
    ramp = getattr(s, "ramp_up", None)
    start, end = getattr(s, "ramp_up_start_rps", None), getattr(s, "ramp_up_end_rps", None)
    offsets = arrival_offsets(n, s.request_rate, s.burstiness, seed, ramp, start, end)
    k = len(input_tokens)
    planned = [PlannedRequest(index=i, offset_s=o, item=i % k if k else i,
                              input_tokens=input_tokens[i % k] if k else None) for i, o in enumerate(offsets)]
    info = {"source": "arrivals", "process": "vllm bench serve get_request (gamma gaps, rescaled to n/rate)",
            "seed": seed, "ramp_up": ramp, "ramp_up_start_rps": start, "ramp_up_end_rps": end}
    return Schedule(planned, offered_rate_s(n, s.request_rate, ramp, start, end, offsets), info)
