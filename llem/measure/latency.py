"""Per-request latency records and their summary: TTFT, ITL, end-to-end.

Timestamps are `time.perf_counter()` seconds taken on the measured pass itself (no proxy runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llem.measure.stats import summarize


@dataclass
class RequestRecord:
    """One prompt's journey through the engine."""

    index: int  # position in the dataset sample
    input_tokens: int
    output_tokens: int
    t_submit: float  # request handed to the engine
    t_first_token: float | None  # None where the engine streams no tokens (e.g. beam search)
    t_end: float
    batch: int | None = None  # static batch it ran in (pytorch: shares step times); None: own schedule
    token_times: list[float] = field(default_factory=list)  # optional: each output token's (or streamed chunk's) time
    t_scheduled: float | None = None  # serving: the arrival time the arrival process gave it (perf_counter)
    error: str | None = None  # serving: why the request failed (None: it succeeded)

    @property
    def ttft_s(self) -> float | None:
        return None if self.t_first_token is None else self.t_first_token - self.t_submit

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_submit

    @property
    def itl_s(self) -> float | None:
        """Mean inter-token latency of this request: decode time / (output tokens - 1)."""
        if self.t_first_token is None or self.output_tokens < 2:
            return None
        return (self.t_end - self.t_first_token) / (self.output_tokens - 1)

    def step_gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]

    def as_row(self) -> dict[str, Any]:
        """One requests.jsonl line. Serving records (t_scheduled set) keep every token's time, and add
        their lateness (send − scheduled arrival) and success; offline rows stay compact."""
        row = asdict(self)
        serving = self.t_scheduled is not None
        if not serving:
            row.pop("token_times")
            row.pop("t_scheduled")
            row.pop("error")
        row.update(ttft_s=self.ttft_s, itl_s=self.itl_s, e2e_s=self.e2e_s)
        if serving:
            row.update(lateness_s=self.t_submit - self.t_scheduled, success=self.error is None)
        return row


@dataclass
class Phase:
    """A span of the window with a known boundary between prefill and decode (per batch or step)."""

    t_start: float
    t_first_token: float | None
    t_end: float


def spread_tokens(first: float | None, end: float, n: int) -> list[float]:
    """Token times where only the first and last are known: n instants evenly from first to end."""
    if n <= 0 or first is None:
        return []
    if n == 1:
        return [first]
    step = (end - first) / (n - 1)
    return [first + k * step for k in range(n)]


def latency_block(records: list[RequestRecord]) -> dict[str, Any]:
    """The result's `latency` block: stats of TTFT, per-request ITL, per-step ITL and e2e."""
    ttft = [r.ttft_s for r in records if r.ttft_s is not None]
    itl = [r.itl_s for r in records if r.itl_s is not None]
    e2e = [r.e2e_s for r in records]
    steps: list[float] = []
    seen_batches: set[int] = set()
    for r in records:
        # Requests of one static batch share their step times; count each batch's steps once.
        if not r.token_times or r.batch in seen_batches:
            continue
        steps.extend(r.step_gaps_s())
        if r.batch is not None:
            seen_batches.add(r.batch)
    return {
        "ttft_s": summarize(ttft),
        "itl_request_mean_s": summarize(itl),
        "itl_step_s": summarize(steps),
        "e2e_s": summarize(e2e),
        "per_token_timing": bool(ttft),
    }
