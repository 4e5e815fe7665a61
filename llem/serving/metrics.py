"""The result's `serving` block, from per-request records, the window and the meters (pure).

Definitions (README "Serving"), all on the measured pass, window = the measurement window [w0, w1]:
- achieved_rate_s: requests that succeeded / window seconds (vLLM bench's "request throughput").
- TTFT = first token − send; ITL = gaps between a request's successive streamed tokens (pooled);
  the request's mean ITL = (end − first token) / (output tokens − 1).
- SLO: a request meets it when it succeeded, TTFT <= slo.ttft_s and mean ITL <= slo.itl_s (a
  one-token answer has no ITL and meets the ITL part). goodput_rate_s = meeting / window seconds;
  fraction = meeting / requests sent.
- steady state: from the first completion of any request (the arrival process has run for one
  request lifetime, so arrivals and departures overlap from then on) to the last send (after it
  nothing arrives: the drain). None when the last send comes before the first completion (few
  requests for the rate, or rate=inf).
- energy: the energy block's basis kind (GPU, else CPU package); per-request shares by
  llem/serving/attribution.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llem.measure.latency import RequestRecord, spread_tokens
from llem.measure.stats import summarize
from llem.serving.attribution import Span, attribute, energy_function


def meets_slo(r: RequestRecord, ttft_s: float, itl_s: float) -> bool:
    if r.error is not None or r.ttft_s is None:
        return False
    itl = r.itl_s
    return r.ttft_s <= ttft_s and (itl is None or itl <= itl_s)


def steady_state_span(records: Sequence[RequestRecord]) -> tuple[float, float] | None:
    """[first completion, last send], or None when arrivals stop before any request completes."""
    if not records:
        return None
    t0 = min(r.t_end for r in records)
    t1 = max(r.t_submit for r in records)
    return (t0, t1) if t1 > t0 else None


def token_instants(r: RequestRecord) -> list[float]:
    """Each output token's time: streamed where there is one time per token, else spread evenly."""
    if r.token_times and len(r.token_times) == r.output_tokens:
        return list(r.token_times)
    return spread_tokens(r.t_first_token, r.t_end, r.output_tokens)


def _itl_gaps(records: Sequence[RequestRecord]) -> list[float]:
    return [b - a for r in records for a, b in zip(r.token_times, r.token_times[1:])]


def _peak(records: Sequence[RequestRecord]) -> int:
    events = sorted([(r.t_end, -1) for r in records] + [(r.t_submit, 1) for r in records])  # ends first on ties
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _per(x: float | None, n: float | None) -> float | None:
    return x / n if x is not None and n else None


def serving_block(records: Sequence[RequestRecord], w0: float, w1: float, scenario: Any,
                  readings: Sequence[Any] = (), energy: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(the `serving` block, per-request extra columns for requests.jsonl keyed by index)."""
    window_s = w1 - w0
    ok = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    slo = scenario.slo
    meeting = [r for r in ok if meets_slo(r, slo.ttft_s, slo.itl_s)]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)
    sends = sorted(r.t_submit for r in records)
    lateness = [r.t_submit - r.t_scheduled for r in records if r.t_scheduled is not None]
    rate = scenario.request_rate
    block: dict[str, Any] = {
        "request_rate": None if rate is None or math.isinf(rate) else rate,  # offered; null = inf (all at once)
        "request_rate_inf": bool(rate is not None and math.isinf(rate)),
        "burstiness": scenario.burstiness, "max_concurrency": scenario.max_concurrency,
        "warmup_requests": scenario.warmup_requests,
        "requests": {"sent": len(records), "succeeded": len(ok), "failed": len(failed),
                     "errors": sorted({r.error for r in failed if r.error})[:5]},
        "window_s": window_s,
        "achieved_rate_s": _per(len(ok), window_s),
        "send_rate_s": (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else None,
        "throughput": {"output_tok_s": _per(out_tokens, window_s), "total_tok_s": _per(in_tokens + out_tokens, window_s)},
        "latency": {
            "ttft_s": summarize([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl_s": summarize(_itl_gaps(ok)),
            "itl_request_mean_s": summarize([r.itl_s for r in ok if r.itl_s is not None]),
            "e2e_s": summarize([r.e2e_s for r in ok]),
            "lateness_s": summarize(lateness),
        },
        "slo": {"ttft_s": slo.ttft_s, "itl_s": slo.itl_s, "met": len(meeting),
                "fraction": _per(len(meeting), len(records)), "goodput_rate_s": _per(len(meeting), window_s)},
        "output_tokens": out_tokens, "input_tokens": in_tokens,
        # requests in flight (sent, not finished): the most at once, and the time average (Little's law)
        "in_flight": {"peak": _peak(records), "mean": _per(sum(r.e2e_s for r in records), window_s)},
        "backend_info": info or {},
    }

    # Energy: the energy block's basis kind, as a cumulative curve over the window.
    energy = energy or {}
    basis = energy.get("basis")
    total = energy.get(f"{basis}_j") if basis else None
    energy_at, source = energy_function(readings, basis, w0, w1, total) if basis else (None, "unmeasured")
    met = {r.index for r in meeting}
    rows: dict[int, dict[str, Any]] = {r.index: {"meets_slo": r.index in met} for r in records}
    e_block: dict[str, Any] = {"basis": basis, "source": source, "energy_j": total,
                               "j_per_request": _per(total, len(ok)), "j_per_output_token": _per(total, out_tokens),
                               "j_per_slo_request": _per(total, len(meeting)), "attribution": None}
    if energy_at is not None:
        att = attribute([Span(r.index, r.t_submit, r.t_first_token, r.t_end) for r in records], energy_at, w0, w1)
        per_request = [s.energy_j for s in att.shares]
        e_block["attribution"] = {
            **att.as_dict(),
            "per_request_j": summarize(per_request),
            "rule": "each instant's energy split equally among the requests running then; send→first token "
                    "counts as prefill, first token→end as decode; instants with none running are idle",
        }
        for s in att.shares:
            rows[s.index].update(energy_j=s.energy_j, prefill_energy_j=s.prefill_j, decode_energy_j=s.decode_j)
    block["energy"] = e_block

    span = steady_state_span(records)
    steady: dict[str, Any] | None = None
    if span is not None:
        t0, t1 = span
        tokens = sum(1 for r in ok for t in token_instants(r) if t0 < t <= t1)
        done = sum(1 for r in ok if t0 < r.t_end <= t1)
        e = None if energy_at is None else max(0.0, energy_at(t1) - energy_at(t0))
        steady = {"t_start": t0, "t_end": t1, "duration_s": t1 - t0, "output_tokens": tokens, "requests": done,
                  "output_tok_s": tokens / (t1 - t0), "requests_s": done / (t1 - t0), "energy_j": e,
                  "j_per_output_token": _per(e, tokens), "mean_power_w": _per(e, t1 - t0),
                  "definition": "from the first request completion to the last send"}
    block["steady_state"] = steady
    block["steady_state_note"] = None if steady else (
        "no steady state: the last request was sent before the first one completed (more requests, or a "
        "lower request_rate)")
    return block, rows
