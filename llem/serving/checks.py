"""Range checks of the serving knobs (`scenario.*` with scenario=serving), the trace file's included.

Called from llem/config/validate.py before any model loads; each problem is (key, value, what is allowed)
and becomes one `llem:` line, exit 2. A bad trace file gives one problem naming file, row and column.
"""

from __future__ import annotations

import math
from typing import Any

from llem.serving.arrivals import RAMP_UP


def _bad_number(x: Any, lo_open: float = 0.0) -> bool:
    return x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x <= lo_open


def check_serving(s: Any) -> list[tuple[str, Any, str]]:
    out: list[tuple[str, Any, str]] = []
    add = lambda k, v, a: out.append((k, v, a))  # noqa: E731
    rate = s.request_rate
    if _bad_number(rate):
        add("scenario.request_rate", rate, "a number of requests/s > 0, or inf (all at once)")
    if _bad_number(s.burstiness):
        add("scenario.burstiness", s.burstiness, "a number > 0, or inf (1 = Poisson, < 1 burstier, > 1 more "
            "regular, inf = constant gaps)")
    if s.max_concurrency is not None and (isinstance(s.max_concurrency, bool) or s.max_concurrency < 1):
        add("scenario.max_concurrency", s.max_concurrency, "an integer >= 1, or null (unbounded)")
    if s.warmup_requests < 0:
        add("scenario.warmup_requests", s.warmup_requests, "an integer >= 0")
    ramp = getattr(s, "ramp_up", None)
    if ramp is not None and ramp not in RAMP_UP:
        add("scenario.ramp_up", ramp, f"one of {', '.join(RAMP_UP)} or null")
    if ramp is not None:
        for key in ("ramp_up_start_rps", "ramp_up_end_rps"):
            v = getattr(s, key)
            if _bad_number(v) or math.isinf(v):
                add(f"scenario.{key}", v, f"a finite number of requests/s > 0 (needed with scenario.ramp_up={ramp})")
    else:
        for key in ("ramp_up_start_rps", "ramp_up_end_rps"):
            if getattr(s, key, None) is not None:
                add(f"scenario.{key}", getattr(s, key), "null unless scenario.ramp_up=linear|exponential")
    slo = s.slo
    for key in ("ttft_s", "tpot_s", "e2el_s"):
        v = getattr(slo, key)
        if v is not None and _bad_number(v):
            add(f"scenario.slo.{key}", v, "a number of seconds > 0, or null (not used)")
    if getattr(slo, "itl_s", None) is not None:
        add("scenario.slo.itl_s", slo.itl_s, "null: renamed scenario.slo.tpot_s (it was the request's mean time "
            "per output token, vLLM's TPOT; vLLM's ITL is per streamed chunk)")
    t = getattr(s, "trace", None)
    if t is not None and t.path is not None:
        out.extend(check_trace(t, ramp))
    return out


def check_trace(t: Any, ramp: str | None = None) -> list[tuple[str, Any, str]]:
    from llem.serving.trace import FORMATS, TraceError, load_trace

    out: list[tuple[str, Any, str]] = []
    if t.format not in FORMATS:
        out.append(("scenario.trace.format", t.format, f"one of {', '.join(FORMATS)}"))
    if _bad_number(t.speedup) or math.isinf(t.speedup):
        out.append(("scenario.trace.speedup", t.speedup, "a finite number > 0 (trace time is divided by it)"))
    if t.start_s is None or isinstance(t.start_s, bool) or not 0 <= t.start_s < math.inf:
        out.append(("scenario.trace.start_s", t.start_s, "a number of seconds >= 0"))
    if t.duration_s is not None and _bad_number(t.duration_s):
        out.append(("scenario.trace.duration_s", t.duration_s, "a number of seconds > 0, or null (to the end)"))
    if t.max_requests is not None and (isinstance(t.max_requests, bool) or t.max_requests < 1):
        out.append(("scenario.trace.max_requests", t.max_requests, "an integer >= 1, or null (all)"))
    if t.block_tokens is not None and (isinstance(t.block_tokens, bool) or t.block_tokens < 1):
        out.append(("scenario.trace.block_tokens", t.block_tokens, "an integer >= 1, or null (inferred)"))
    if ramp is not None:
        out.append(("scenario.ramp_up", ramp, "null with scenario.trace.path (the trace sets every arrival)"))
    if out:
        return out
    try:
        load_trace(t)
    except TraceError as e:
        out.append(("scenario.trace.path", t.path, f"a trace llem can replay; here {str(e).split(': ', 1)[1]}"))
    return out
