"""Per-request latency records and their summary: TTFT, ITL, end-to-end.

Timestamps are `time.perf_counter()` seconds taken on the measured pass itself (no proxy runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llem.measure.stats import summarize

# Failure reason codes of RequestRecord.failure (a record with `error` set and no code counts as "error").
FAILURE_CODES = (
    "truncated",   # the stream ended without [DONE], finish_reason or the requested usage
    "http_4xx",    # the server answered 4xx (429 included)
    "http_5xx",    # the server answered 5xx
    "timeout",     # no chunk within the read timeout
    "connection",  # cannot connect / connection reset
    "server",      # an error object inside the stream / the engine raised
    "skipped",     # never sent (e.g. a server that died earlier in the run)
    "error",       # anything else
)


@dataclass
class RequestRecord:
    """One prompt's journey through the engine (offline batch, in-process serving, or over HTTP).

    Clock: every `t_*` and list entry is `time.perf_counter()` seconds of the process that measured it.
    Serving (llem/serving/metrics.py, docs/serving-metrics.md) reads these fields as vLLM's benchmark does:
    TTFT = t_first_token − t_submit; ITL = one gap per successive entry of `chunk_times`; TPOT =
    (t_end − t_first_token) / (output_tokens − 1); e2el = t_end − t_submit.
    """

    index: int  # position in the dataset sample / schedule
    input_tokens: int  # prompt tokens as sent (after any trace clip)
    output_tokens: int  # tokens generated (server's usage where it reports it, else the streamed count)
    t_submit: float  # request handed to the engine (serving: the send)
    t_first_token: float | None  # first chunk carrying output (= chunk_times[0]); None: no token came
    t_end: float  # last chunk carrying output (failed: when the failure was seen)
    batch: int | None = None  # static batch it ran in (pytorch: shares step times); None: own schedule
    # Per-token series, for energy attribution only (one entry per output token). Where a chunk carries
    # k tokens the k entries are that chunk's time (or spread, where the filler says so): never use it for ITL.
    token_times: list[float] = field(default_factory=list)
    # Engine scheduling time: when the engine first scheduled the request onto the running batch (in-process
    # vLLM: RequestStateStats.scheduled_ts mapped onto perf_counter). Queued before it, running after it.
    # None where the engine does not expose it (HTTP): the request's span is then "in flight" from t_submit.
    t_scheduled: float | None = None
    error: str | None = None  # why the request failed, human-readable (None: it succeeded)
    # --- serving fields (contract between the scheduler, the in-process vLLM backend and the HTTP client) ---
    # Arrival time of each streamed chunk that carried output (one entry per chunk, in order; the first
    # one is the first token). vLLM's ITL is the gaps of this list: a chunk of k tokens is ONE gap.
    chunk_times: list[float] = field(default_factory=list)
    # Tokens in each chunk of chunk_times (same length); where the server does not say, all 1s.
    chunk_tokens: list[int] = field(default_factory=list)
    t_due: float | None = None  # serving: the arrival time the arrival process / trace gave it (perf_counter)
    finish_reason: str | None = None  # the engine's/server's finish reason ("length", "stop", ...); None: not given
    # Machine-readable failure reason code (None: succeeded). One of FAILURE_CODES; `error` keeps the detail.
    failure: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.failure is None

    @property
    def ttft_s(self) -> float | None:
        return None if self.t_first_token is None else self.t_first_token - self.t_submit

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_submit

    @property
    def itl_s(self) -> float | None:
        """Mean inter-token latency of this request: decode time / (output tokens - 1) (= vLLM's TPOT)."""
        if self.t_first_token is None or self.output_tokens < 2:
            return None
        return (self.t_end - self.t_first_token) / (self.output_tokens - 1)

    @property
    def tpot_s(self) -> float | None:
        """vLLM's TPOT: (e2el − ttft) / (output tokens − 1), only with more than one output token."""
        return self.itl_s

    def step_gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]

    def chunk_gaps_s(self) -> list[float]:
        """vLLM's ITL entries of this request: one gap per streamed chunk after the first."""
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]

    def as_row(self) -> dict[str, Any]:
        """One requests.jsonl line. Serving records (t_due set) keep every chunk's and token's time, and add
        their lateness (send − due arrival), queue time and success; offline rows stay compact."""
        row = asdict(self)
        serving = self.t_due is not None
        if not serving:
            for key in ("token_times", "t_scheduled", "error", "chunk_times", "chunk_tokens", "t_due",
                        "finish_reason", "failure"):
                row.pop(key)
        row.update(ttft_s=self.ttft_s, itl_s=self.itl_s, e2e_s=self.e2e_s)
        if serving:
            queue = None if self.t_scheduled is None else self.t_scheduled - self.t_submit
            row.update(tpot_s=self.tpot_s, lateness_s=self.t_submit - self.t_due, queue_s=queue,
                       success=self.succeeded)
        return row


@dataclass
class Phase:
    """A span of the window with a known boundary between prefill and decode (per batch or step)."""

    t_start: float
    t_first_token: float | None
    t_end: float


@dataclass
class SteadyState:
    """The measured pass's steady-state span (ML.ENERGY: the engine's batch full): perf_counter edges and
    what finished in it. vLLM offline fills it (llem/backends/vllm/timing.py); the energy block prices it
    and the result's throughput.steady_state reports it."""

    t_start: float
    t_end: float
    output_tokens: int  # tokens produced inside (t_start, t_end]
    requests: int  # requests that finished inside it
    batch_size: int | None = None  # the engine's batch cap the span is full at
    method: str = ""

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.duration_s

    def throughput(self) -> dict[str, Any]:
        """The result's throughput.steady_state block."""
        return {"output_tok_s": self.output_tok_s, "output_tokens": self.output_tokens, "requests": self.requests,
                "duration_s": self.duration_s, "batch_size": self.batch_size}


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
        if r.chunk_times:  # streamed serving: one gap per chunk (vLLM's ITL), never the zero gaps inside a chunk
            steps.extend(r.chunk_gaps_s())
            continue
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
