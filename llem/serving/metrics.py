"""The result's `serving` block, from per-request records, the window and the meters (pure).

Definitions (docs/serving-metrics.md; vLLM's `calculate_metrics` in vllm/benchmarks/serve.py unless said):
- Only SUCCEEDED requests enter the headline figures (throughput, latency, token counts, steady state);
  failed ones are counted and listed by reason code (RequestRecord.failure, else "error").
- TTFT = first chunk with output − send. ITL = the gaps between a request's successive streamed chunks
  (one gap per chunk: a chunk of k tokens is one gap), pooled over requests. TPOT = (e2el − ttft) /
  (output tokens − 1) per request, only with > 1 output token. e2el = last chunk − send.
- Rates: offered = the schedule's (request_rate, or the trace window's); send_rate_s = requests sent /
  (last send − window start) (the offered rate as realised by the scheduler); achieved_rate_s = succeeded /
  window seconds (vLLM's "request throughput", window = benchmark duration).
- SLO (`scenario.slo`, as vLLM's --goodput): a succeeded request is good when every threshold that is set
  holds: ttft ≤ ttft_s, tpot ≤ tpot_s (a request with ≤ 1 token has tpot 0), e2el ≤ e2el_s.
  goodput_rate_s = good / window seconds; fraction = good / requests sent (failed ones are not good).
- Steady state (ML.ENERGY): B = the most succeeded requests running at once; from the instant B of them
  have their first token to the instant only B − 1 remain unfinished; succeeded requests only.
- Energy: the energy block's basis kind; per-request shares by llem/serving/attribution.py over each
  request's RUNNING span (engine scheduling → last token) where the engine gives its scheduling time, or
  its IN-FLIGHT span (send → last token) where it does not (HTTP); beside it ML.ENERGY's per-request figure
  (steady-state J per output token × the request's output tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llem.measure.latency import RequestRecord, spread_tokens
from llem.measure.stats import summarize
from llem.serving.attribution import Span, attribute, energy_function

if TYPE_CHECKING:
    from llem.backends.base import ServingInfo


def failure_code(r: RequestRecord) -> str | None:
    if r.failure is not None:
        return r.failure
    return "error" if r.error is not None else None


def chunk_times(r: RequestRecord) -> list[float]:
    """The request's chunk arrival times; where a filler gave only per-token times, equal times are one chunk."""
    if r.chunk_times:
        return list(r.chunk_times)
    out: list[float] = []
    for t in r.token_times:
        if not out or t != out[-1]:
            out.append(t)
    return out


def itl_gaps(records: Sequence[RequestRecord]) -> list[float]:
    """vLLM's ITL list: one gap per streamed chunk after the first, pooled over requests."""
    gaps: list[float] = []
    for r in records:
        c = chunk_times(r)
        gaps.extend(b - a for a, b in zip(c, c[1:]))
    return gaps


def tpot_for_goodput(r: RequestRecord) -> float:
    """vLLM: TPOT, or 0 for a request with at most one output token."""
    t = r.tpot_s
    return 0.0 if t is None else t


def is_good(r: RequestRecord, slo: Any) -> bool:
    """vLLM --goodput: succeeded and every threshold that is set holds (≤)."""
    if not r.succeeded or r.ttft_s is None:
        return False
    ttft, tpot, e2el = getattr(slo, "ttft_s", None), getattr(slo, "tpot_s", None), getattr(slo, "e2el_s", None)
    return ((ttft is None or r.ttft_s <= ttft) and (tpot is None or tpot_for_goodput(r) <= tpot)
            and (e2el is None or r.e2e_s <= e2el))


def slo_set(slo: Any) -> bool:
    return any(getattr(slo, k, None) is not None for k in ("ttft_s", "tpot_s", "e2el_s"))


def run_start(r: RequestRecord) -> float:
    """Where the request's energy span starts: engine scheduling where known, else the send (in flight)."""
    return r.t_scheduled if r.t_scheduled is not None else r.t_submit


def peak_running(spans: Sequence[tuple[float, float]]) -> int:
    events = sorted([(e, -1) for _, e in spans] + [(s, 1) for s, _ in spans])  # ends first on ties
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def steady_state_span(records: Sequence[RequestRecord]) -> tuple[float, float, int] | None:
    """ML.ENERGY: (t0, t1, B) over succeeded requests; t0 = the instant B have their first token, t1 = the
    instant only B − 1 remain unfinished. None when that span is empty (B ≥ requests, or no overlap)."""
    ok = [r for r in records if r.succeeded and r.t_first_token is not None]
    if len(ok) < 2:
        return None
    b = peak_running([(run_start(r), r.t_end) for r in ok])
    firsts = sorted(r.t_first_token for r in ok)  # type: ignore[misc]
    ends = sorted(r.t_end for r in ok)
    if b < 1 or b > len(ok):
        return None
    t0 = firsts[b - 1]
    t1 = ends[len(ok) - b]  # after it, b − 1 remain
    return (t0, t1, b) if t1 > t0 else None


def token_instants(r: RequestRecord) -> list[float]:
    """Each output token's time: per-token series where it has one per token, else spread evenly."""
    if r.token_times and len(r.token_times) == r.output_tokens:
        return list(r.token_times)
    return spread_tokens(r.t_first_token, r.t_end, r.output_tokens)


def _per(x: float | None, n: float | None) -> float | None:
    return x / n if x is not None and n else None


@dataclass
class RequestColumns:
    """Serving's columns for one requests.jsonl row, beside `RequestRecord.as_row()`: SLO and failure for
    every request; the request's attributed energy (sent requests, where energy was sampled) and its
    ML.ENERGY steady-state energy (succeeded requests, where a steady state had energy)."""

    meets_slo: bool | None  # None: no SLO set
    failure: str | None
    prefill_energy_j: float | None = None  # written, with energy_j and decode_energy_j, once attributed
    decode_energy_j: float | None = None
    mlenergy_energy_j: float | None = None

    @property
    def energy_j(self) -> float | None:
        return None if self.prefill_energy_j is None or self.decode_energy_j is None else \
            self.prefill_energy_j + self.decode_energy_j

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"meets_slo": self.meets_slo, "failure": self.failure}
        if self.energy_j is not None:
            out.update(energy_j=self.energy_j, prefill_energy_j=self.prefill_energy_j,
                       decode_energy_j=self.decode_energy_j)
        if self.mlenergy_energy_j is not None:
            out["mlenergy_energy_j"] = self.mlenergy_energy_j
        return out


def serving_block(records: Sequence[RequestRecord], w0: float, w1: float, scenario: Any,
                  readings: Sequence[Any] = (), energy: dict[str, Any] | None = None,
                  info: ServingInfo | None = None) -> tuple[dict[str, Any], dict[int, RequestColumns]]:
    """(the `serving` block, per-request extra columns for requests.jsonl keyed by index).

    `info` is the backend's ServingInfo: its schedule as run and its own facts are reported."""
    schedule = info.schedule_block() if info is not None else {}
    window_s = w1 - w0
    ok = [r for r in records if r.succeeded]
    failed = [r for r in records if not r.succeeded]
    slo = scenario.slo
    use_slo = slo_set(slo)
    good = [r for r in ok if is_good(r, slo)] if use_slo else []
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)
    sent = [r for r in records if r.failure != "skipped"]
    last_send = max((r.t_submit for r in sent), default=None)
    lateness = [r.t_submit - r.t_due for r in sent if r.t_due is not None]
    by_reason: dict[str, int] = {}
    for r in failed:
        code = failure_code(r) or "error"
        by_reason[code] = by_reason.get(code, 0) + 1
    rate = scenario.request_rate
    offered = info.offered_rate_s if info is not None else None if rate is None or math.isinf(rate) else rate
    scheduled_known = bool(records) and all(r.t_scheduled is not None for r in records if r.t_first_token is not None)
    queue = [r.t_scheduled - r.t_submit for r in ok if r.t_scheduled is not None]
    block: dict[str, Any] = {
        "request_rate": None if rate is None or math.isinf(rate) else rate,  # asked; null = inf (all at once)
        "request_rate_inf": bool(rate is not None and math.isinf(rate)),
        "burstiness": scenario.burstiness, "max_concurrency": scenario.max_concurrency,
        "ramp_up": getattr(scenario, "ramp_up", None),
        "warmup_requests": scenario.warmup_requests,
        "schedule": schedule or None,
        "requests": {"planned": len(records), "sent": len(sent), "succeeded": len(ok), "failed": len(failed),
                     "failed_by_reason": by_reason,
                     "errors": sorted({r.error for r in failed if r.error})[:5]},
        "window_s": window_s,
        "offered_rate_s": offered,
        "send_rate_s": _per(len(sent), (last_send - w0) if last_send is not None and last_send > w0 else None),
        "achieved_rate_s": _per(len(ok), window_s),
        "throughput": {"requests_s": _per(len(ok), window_s), "output_tok_s": _per(out_tokens, window_s),
                       "total_tok_s": _per(in_tokens + out_tokens, window_s)},
        "latency": {
            "ttft_s": summarize([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl_s": summarize(itl_gaps(ok)),
            "tpot_s": summarize([r.tpot_s for r in ok if r.tpot_s is not None]),
            "itl_request_mean_s": summarize([r.tpot_s for r in ok if r.tpot_s is not None]),  # = tpot_s (old name)
            "e2e_s": summarize([r.e2e_s for r in ok]),
            "lateness_s": summarize(lateness),
            "queue_s": summarize(queue) if queue else None,
            "definitions": "as vllm bench serve: TTFT from send; ITL one gap per streamed chunk, pooled; TPOT "
                           "(e2el - ttft)/(output tokens - 1) per request with > 1 token; succeeded requests only",
        },
        "slo": {"ttft_s": getattr(slo, "ttft_s", None), "tpot_s": getattr(slo, "tpot_s", None),
                "e2el_s": getattr(slo, "e2el_s", None),
                "itl_s": getattr(slo, "tpot_s", None),  # old column name of tpot_s, kept for reports/studies
                "met": len(good) if use_slo else None,
                "fraction": _per(len(good), len(records)) if use_slo else None,
                "fraction_of_succeeded": _per(len(good), len(ok)) if use_slo else None,
                "goodput_rate_s": _per(len(good), window_s) if use_slo else None},
        "output_tokens": out_tokens, "input_tokens": in_tokens,
        # requests in flight (sent, not finished): the most at once, and the time average (Little's law)
        "in_flight": {"peak": peak_running([(r.t_submit, r.t_end) for r in sent]),
                      "mean": _per(sum(r.e2e_s for r in sent), window_s)},
        "running": ({"peak": peak_running([(r.t_scheduled, r.t_end) for r in sent if r.t_scheduled is not None])}
                    if scheduled_known else None),
        "backend_info": dict(info.backend) if info is not None else {},
    }

    # Energy: the energy block's basis kind, as a cumulative curve over the window.
    energy = energy or {}
    basis = energy.get("basis")
    total = energy.get(f"{basis}_j") if basis else None
    energy_at, source = energy_function(readings, basis, w0, w1, total) if basis else (None, "unmeasured")
    met = {r.index for r in good}
    rows = {r.index: RequestColumns((r.index in met) if use_slo else None, failure_code(r)) for r in records}
    e_block: dict[str, Any] = {"basis": basis, "source": source, "energy_j": total,
                               "j_per_request": _per(total, len(ok)), "j_per_output_token": _per(total, out_tokens),
                               "j_per_slo_request": _per(total, len(good)) if use_slo else None,
                               "attribution": None}
    if energy_at is not None:
        spans = [Span(r.index, run_start(r), r.t_first_token, r.t_end) for r in sent]
        att = attribute(spans, energy_at, w0, w1)
        shares = {s.index: s for s in att.shares}
        e_block["attribution"] = {
            **att.as_dict(),
            "per_request_j": summarize([shares[r.index].energy_j for r in ok if r.index in shares]),
            "span": "running" if scheduled_known else "in_flight",
            "rule": ("each instant's energy split equally among the requests RUNNING then (engine scheduling → "
                     "last token; queued time before scheduling takes no share); scheduling → first token "
                     "counts as prefill, first token → last token as decode; instants with none running are idle"
                     if scheduled_known else
                     "each instant's energy split equally among the requests IN FLIGHT then (send → last token): "
                     "the server does not expose when it scheduled a request, so time queued in the server "
                     "takes a share as if computing; send → first token counts as 'before first token' (queue + "
                     "prefill), first token → last token as decode; instants with none in flight are idle"),
        }
        for s in att.shares:
            rows[s.index].prefill_energy_j, rows[s.index].decode_energy_j = s.prefill_j, s.decode_j
    block["energy"] = e_block

    span = steady_state_span(records)
    steady: dict[str, Any] | None = None
    if span is not None:
        t0, t1, b = span
        tokens = sum(1 for r in ok for t in token_instants(r) if t0 < t <= t1)
        done = sum(1 for r in ok if t0 < r.t_end <= t1)
        e = None if energy_at is None else max(0.0, energy_at(t1) - energy_at(t0))
        jpt = _per(e, tokens)
        steady = {"t_start": t0, "t_end": t1, "duration_s": t1 - t0, "running_b": b, "output_tokens": tokens,
                  "requests": done, "output_tok_s": tokens / (t1 - t0), "requests_s": done / (t1 - t0),
                  "energy_j": e, "j_per_output_token": jpt, "mean_power_w": _per(e, t1 - t0),
                  "definition": "ML.ENERGY: B = most succeeded requests running at once; from when B have their "
                                "first token to when only B - 1 remain unfinished; succeeded requests only"}
        if jpt is not None:
            mle = [jpt * r.output_tokens for r in ok]
            steady["mlenergy_per_request_j"] = summarize(mle)
            e_block["mlenergy_per_request_j"] = summarize(mle)
            for r in ok:
                rows[r.index].mlenergy_energy_j = jpt * r.output_tokens
    block["steady_state"] = steady
    block["steady_state_note"] = None if steady else (
        "no steady state: the most requests running at once never overlapped long enough (ML.ENERGY's span from "
        "B first tokens to B - 1 left is empty): more requests, or a higher request_rate")
    return block, rows
