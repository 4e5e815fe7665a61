"""Trace replay (`scenario.trace.*`, docs/traces.md): read a production trace, cut a window, plan requests.

Formats (detected from the content; `scenario.trace.format` forces one):
- Azure LLM inference trace 2023 (CSV): header `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like
  `2023-11-16 18:15:46.6805900` (seven fractional digits, read exactly); a plain number is taken as seconds.
- Mooncake / Alibaba (JSONL): one object per line with `timestamp` (ms from the trace start),
  `input_length`, `output_length` and optional `hash_ids` (each id = one block of `block_tokens` tokens;
  equal ids = identical prefix content).

The plan (`plan_trace`) turns the window into the schedule of llem/serving/schedule.py: request j is due
at (t_j − t_first) / speedup, with a prompt of exactly its input length as token ids of the model's
tokenizer and exactly its output length (`max_tokens` + `ignore_eos`). Prompt tokens come from a pool of
text tokens (the dataset's prompts, tokenized; or synthesized ids where there is no text): a hash_id maps
to one fixed block of the pool, so requests sharing ids share those prefix tokens exactly and the engine's
prefix cache sees the trace's sharing; content without ids (Azure, or a prompt's tail past its blocks)
starts at a request-specific place in the pool, so it is not shared by accident.

Every problem of the file is a `TraceError` (a UserError: exit 2, one line naming file, row and column),
raised while validating the config — before any model loads. Pure: stdlib only.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llem.errors import UserError
from llem.serving.schedule import PlannedRequest, Schedule

FORMATS = ("auto", "azure", "mooncake")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")


class TraceError(UserError):
    """A trace file that cannot be replayed: file, row, column and what is wrong, on one line."""

    def __init__(self, path: str | Path, row: int | str | None, column: str | None, what: str) -> None:
        rows = "rows" if isinstance(row, str) and "-" in row else "row"
        where = ", ".join(x for x in (f"{rows} {row}" if row is not None else None,
                                      f"column {column}" if column else None) if x)
        super().__init__(f"scenario.trace.path={path}: {where + ': ' if where else ''}{what}")


@dataclass(frozen=True)
class TraceRow:
    row: int  # line number in the file (1-based; the CSV header is line 1)
    t_s: float  # seconds on the trace's clock
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...] | None = None


@dataclass
class Trace:
    path: str
    format: str
    rows: list[TraceRow]  # the window's rows, in time order
    rows_in_file: int
    info: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            s = line.strip().lstrip("\ufeff")
            if not s:
                continue
            if s.startswith("{"):
                return "mooncake"
            if "," in s:
                return "azure"
            raise TraceError(path, 1, None, "neither a CSV header (TIMESTAMP,ContextTokens,GeneratedTokens) nor a "
                             "JSON object (Mooncake JSONL): set scenario.trace.format=azure|mooncake or fix the file")
    raise TraceError(path, None, None, "the file is empty")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_azure_time(text: str) -> float:
    """'2023-11-16 18:15:46.6805900' -> seconds (all fractional digits kept); a plain number -> itself."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    base, _, frac = s.partition(".")
    dt = datetime.strptime(base.replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    if frac and not frac.isdigit():
        raise ValueError(s)
    return (dt - _EPOCH).total_seconds() + (float("0." + frac) if frac else 0.0)


def _length(path: Path, row: int, column: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TraceError(path, row, column, f"{value!r} is not a token count")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TraceError(path, row, column, f"{value!r} is not a token count (an integer >= 0)") from None
    if x != x or x < 0 or x != int(x):
        raise TraceError(path, row, column, f"{value!r} is not a token count (an integer >= 0)")
    return int(x)


def read_azure(path: Path) -> list[TraceRow]:
    rows: list[TraceRow] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in AZURE_COLUMNS if c not in header]
        if missing:
            raise TraceError(path, 1, missing[0], f"missing (the header has {', '.join(header) or 'nothing'}; "
                             f"Azure traces have {', '.join(AZURE_COLUMNS)})")
        reader.fieldnames = header
        for rec in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                continue
            try:
                t = parse_azure_time(rec["TIMESTAMP"] or "")
            except ValueError:
                raise TraceError(path, line, "TIMESTAMP", f"{rec['TIMESTAMP']!r} is not a timestamp "
                                 "(YYYY-MM-DD HH:MM:SS.fffffff, or seconds)") from None
            rows.append(TraceRow(line, t, _length(path, line, "ContextTokens", rec["ContextTokens"]),
                                 _length(path, line, "GeneratedTokens", rec["GeneratedTokens"])))
    return rows


def read_mooncake(path: Path) -> list[TraceRow]:
    rows: list[TraceRow] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(path, line_no, None, f"not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise TraceError(path, line_no, None, "not a JSON object")
            for key in MOONCAKE_KEYS:
                if key not in obj:
                    raise TraceError(path, line_no, key, f"missing (Mooncake rows have {', '.join(MOONCAKE_KEYS)})")
            ts = obj["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
                raise TraceError(path, line_no, "timestamp", f"{ts!r} is not a number of milliseconds")
            ids = obj.get("hash_ids")
            if ids is not None and (not isinstance(ids, list) or
                                    not all(isinstance(h, int) and not isinstance(h, bool) for h in ids)):
                raise TraceError(path, line_no, "hash_ids", "not a list of integers")
            rows.append(TraceRow(line_no, ts / 1000.0, _length(path, line_no, "input_length", obj["input_length"]),
                                 _length(path, line_no, "output_length", obj["output_length"]),
                                 tuple(ids) if ids else None))
    return rows


def load_trace(t: Any) -> Trace:
    """Read `scenario.trace` (TraceConfig), check it, and cut its window. Raises TraceError."""
    path = Path(str(t.path)).expanduser()
    if not path.is_file():
        raise TraceError(path, None, None, "no such file")
    fmt = detect_format(path) if t.format == "auto" else t.format
    rows = read_azure(path) if fmt == "azure" else read_mooncake(path)
    column = "TIMESTAMP" if fmt == "azure" else "timestamp"
    if not rows:
        raise TraceError(path, None, None, "no requests in the file")
    for a, b in zip(rows, rows[1:]):
        if b.t_s < a.t_s:
            raise TraceError(path, b.row, column, f"timestamps go backwards ({b.t_s - a.t_s:.6g} s after row {a.row}): "
                             "rows must be in time order")
    t0 = rows[0].t_s
    lo = t0 + float(t.start_s or 0.0)
    hi = math.inf if t.duration_s is None else lo + float(t.duration_s)
    window = [r for r in rows if lo <= r.t_s < hi]
    if t.max_requests is not None:
        window = window[: int(t.max_requests)]
    if not window:
        raise TraceError(path, f"{rows[0].row}-{rows[-1].row}", column,
                         f"no request in the window start_s={t.start_s}, duration_s={t.duration_s} (the trace spans "
                         f"{rows[-1].t_s - t0:.6g} s)")
    return Trace(str(path), fmt, window, len(rows),
                 {"first_row": window[0].row, "last_row": window[-1].row,
                  "trace_span_s": rows[-1].t_s - t0, "window_span_s": window[-1].t_s - window[0].t_s})


def infer_block_tokens(rows: list[TraceRow]) -> int | None:
    """Tokens per hash_id block: the largest ceil(input_length / len(hash_ids)) (Mooncake: 512, Alibaba: 16)."""
    sizes = [math.ceil(r.input_len / len(r.hash_ids)) for r in rows if r.hash_ids and r.input_len]
    return max(sizes) if sizes else None


def synthetic_pool(vocab_size: int, n: int = 65536, seed: int = 0, skip: set[int] | None = None) -> list[int]:
    """Token ids to build prompts from where the dataset has no text: seeded, special tokens left out."""
    import random

    rng = random.Random(seed)
    skip = skip or set()
    lo = min(1000, max(1, vocab_size // 10))
    out: list[int] = []
    while len(out) < n:
        x = rng.randrange(lo, vocab_size)
        if x not in skip:
            out.append(x)
    return out


def _take(pool: list[int], start: int, k: int) -> list[int]:
    n = len(pool)
    start %= n
    out = pool[start:start + k]
    while len(out) < k:
        out += pool[: k - len(out)]
    return out


def _mix(key: int) -> int:
    """A fixed spread of block keys over the pool (64-bit mix; deterministic, no hash seed)."""
    x = (key * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 29)


def prompt_tokens(row: TraceRow, j: int, pool: list[int], block: int, length: int) -> list[int]:
    """Exactly `length` token ids: the row's hash_id blocks (shared), then request-specific tokens."""
    out: list[int] = []
    for h in row.hash_ids or ():
        if len(out) >= length:
            break
        out += _take(pool, _mix(2 * h), block)
    if len(out) < length:
        out += _take(pool, _mix(2 * j + 1), length - len(out))  # odd keys: never a hash_id block's place
    return out[:length]


def plan_trace(trace: Trace, t: Any, pool: list[int], context_len: int | None,
               prompt_source: str = "dataset text") -> Schedule:
    """The schedule of the window: offsets, exact prompts and output lengths; too-long requests skipped or clipped."""
    if not pool:
        raise ValueError("plan_trace needs a non-empty token pool")
    block = int(t.block_tokens) if t.block_tokens else (infer_block_tokens(trace.rows) or 512)
    speedup = float(t.speedup)
    t_first = trace.rows[0].t_s
    planned: list[PlannedRequest] = []
    skipped: list[int] = []
    clipped = raised = 0
    for j, r in enumerate(trace.rows):
        n_in, n_out = r.input_len, r.output_len
        if n_in < 1 or n_out < 1:  # an engine needs a token in and one out
            n_in, n_out = max(n_in, 1), max(n_out, 1)
            raised += 1
        if context_len is not None and n_in + n_out > context_len:
            if not t.clip or n_out >= context_len:
                skipped.append(r.row)
                continue
            n_in = context_len - n_out
            clipped += 1
        ids = prompt_tokens(r, j, pool, block, n_in)
        planned.append(PlannedRequest(index=len(planned), offset_s=(r.t_s - t_first) / speedup,
                                      prompt_token_ids=tuple(ids), input_tokens=n_in, max_tokens=n_out,
                                      ignore_eos=True))
    if not planned:
        raise TraceError(trace.path, f"{trace.info['first_row']}-{trace.info['last_row']}", None,
                         f"every request of the window is longer than the model's context ({context_len} tokens); "
                         "set scenario.trace.clip=true or pick another window")
    ids_count: dict[int, int] = {}
    for r in trace.rows:
        for h in set(r.hash_ids or ()):
            ids_count[h] = ids_count.get(h, 0) + 1
    span = planned[-1].offset_s
    info = {
        "source": "trace", "path": trace.path, "format": trace.format, "speedup": speedup,
        "start_s": t.start_s, "duration_s": t.duration_s, "max_requests": t.max_requests,
        "rows_in_file": trace.rows_in_file, "requests_in_window": len(trace.rows), "requests_planned": len(planned),
        "skipped_too_long": len(skipped), "skipped_rows": skipped[:20], "clipped": clipped,
        "lengths_raised_to_1": raised, "context_len": context_len, "block_tokens": block,
        "shared_blocks": sum(1 for c in ids_count.values() if c > 1), "prompt_source": prompt_source,
        **trace.info,
    }
    return Schedule(planned, (len(planned) - 1) / span if span > 0 else None, info)  # first due at 0


def trace_schedule(t: Any, prompts: list[str], tokenizer: Any, context_len: int | None, seed: int = 0) -> Schedule:
    """The whole path for any backend: read the trace (TraceConfig), build the token pool from the dataset's
    prompts in the model's tokenizer (special tokens left out; synthesized ids where there is no text), plan.
    `tokenizer`: a Hugging Face tokenizer (callable, `all_special_ids`, len = vocabulary size)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pool = [x for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"] for x in ids if x not in special]
    source = "dataset text"
    if not pool:
        pool, source = synthetic_pool(len(tokenizer), seed=seed, skip=special), "synthesized token ids"
    return plan_trace(load_trace(t), t, pool, context_len, source)
