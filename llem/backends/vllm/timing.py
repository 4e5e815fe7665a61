"""vLLM's per-request timestamps as llem's timing (pure, no vLLM import): clocks, per-request timing,
steady state (the ML.ENERGY method: the span while `max_num_seqs` requests run) and request phases."""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llem.measure.latency import Phase, RequestRecord, SteadyState, spread_tokens


@dataclass(frozen=True)
class Clocks:
    """Offsets that map vLLM's clocks onto perf_counter: perf = t + offset."""

    monotonic_to_perf_s: float
    wall_to_perf_s: float

    @classmethod
    def sample(cls, reads: int = 5) -> Clocks:
        same = time.get_clock_info("perf_counter").implementation == time.get_clock_info("monotonic").implementation
        best: tuple[float, float, float] | None = None
        for _ in range(reads):
            a = time.perf_counter()
            mono, wall = time.monotonic(), time.time()
            b = time.perf_counter()
            mid = (a + b) / 2
            if best is None or b - a < best[0]:
                best = (b - a, mid - mono, mid - wall)
        assert best is not None
        return cls(0.0 if same else best[1], best[2])


@dataclass
class RequestTiming:
    """One request's vLLM timestamps, already on the perf_counter clock."""

    index: int
    input_tokens: int
    output_tokens: int
    t_arrival: float
    t_scheduled: float | None
    t_first_token: float | None
    t_end: float
    token_times: list[float] = field(default_factory=list)
    cached_tokens: int = 0
    preemptions: int | None = 0  # None: this vLLM's stats have no num_preemptions
    finish_reason: str | None = None

    def record(self) -> RequestRecord:
        return RequestRecord(index=self.index, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                             t_submit=self.t_arrival, t_first_token=self.t_first_token, t_end=self.t_end,
                             batch=None, token_times=self.token_times)

    def token_instants(self) -> list[float]:
        """Each output token's time: measured when streamed, else spread evenly from first to last."""
        if self.token_times:
            return self.token_times
        return spread_tokens(self.t_first_token, self.t_end, self.output_tokens)


def steady_state_span(spans: Sequence[tuple[float, float]], batch: int,
                      instants: Sequence[float]) -> tuple[float, float] | None:
    """[t0, t1] during which `batch` requests were running, or None if the batch never filled.

    spans: (scheduled, last token) per request. instants: times at which engine steps produced tokens.
    t0 = the first schedule instant after which `batch` requests run; t1 = the last step instant at
    which `batch` requests were still in the step (the ones finishing in it included)."""
    events = sorted([(e, 0) for _, e in spans] + [(s, 1) for s, _ in spans])  # ends first at equal times
    running, t0 = 0, None
    for t, kind in events:
        running += 1 if kind else -1
        if kind and running >= batch:
            t0 = t
            break
    if t0 is None:
        return None
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    t1 = None
    for o in sorted(set(instants)):
        # Requests in the step that produced tokens at o: scheduled before o, last token at or after o.
        in_step = bisect.bisect_left(starts, o) - bisect.bisect_left(ends, o)
        if in_step >= batch and o > t0:
            t1 = o
    return None if t1 is None else (t0, t1)


def peak_running(spans: Sequence[tuple[float, float]]) -> int:
    events = sorted([(e, 0) for _, e in spans] + [(s, 1) for s, _ in spans])
    running = peak = 0
    for _, kind in events:
        running += 1 if kind else -1
        peak = max(peak, running)
    return peak


def steady_state_block(timings: Sequence[RequestTiming], batch: int) -> tuple[SteadyState | None, str | None]:
    """RunOutput.steady_state (perf_counter span, tokens and requests in it), or a note why not."""
    spans = [(r.t_scheduled, r.t_end) for r in timings if r.t_scheduled is not None]
    if len(spans) < len(timings) or not spans:
        return None, "steady state unavailable: vLLM reported no schedule times"
    instants = [t for r in timings for t in r.token_instants()]
    span = steady_state_span(spans, batch, instants)
    if span is None:
        return None, (f"steady state not reached: at most {peak_running(spans)} requests ran at once, "
                      f"vllm.max_num_seqs={batch} (more prompts, or a KV cache that holds a full batch)")
    t0, t1 = span
    tokens = sum(1 for t in instants if t0 < t <= t1)
    done = sum(1 for r in timings if t0 < r.t_end <= t1)
    measured = all(r.token_times for r in timings if r.output_tokens)
    return SteadyState(
        t_start=t0, t_end=t1, output_tokens=tokens, requests=done, batch_size=batch,
        method="span with max_num_seqs requests running, from vLLM per-request schedule/token times; "
               + ("tokens counted from per-step timestamps" if measured
                  else "tokens interpolated between each request's first and last token"),
    ), None


def request_phases(timings: Sequence[RequestTiming]) -> list[Phase]:
    """One phase per request: prefill from its scheduling to its first token, then decode."""
    return [Phase(t_start=r.t_scheduled if r.t_scheduled is not None else r.t_arrival,
                  t_first_token=r.t_first_token, t_end=r.t_end) for r in timings]
