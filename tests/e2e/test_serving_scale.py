"""Scale: 5,000 requests at rate inf under `ulimit -n 1024` (soft and hard), against a fast fake server in
another process, all succeed: llem's client raises what it can, then holds at most `pool` connections
and queues the rest before sending (the wait shows as lateness, not as failures or TTFT).
`vllm bench serve` there completes about a third and fails the rest with "Too many open files".

The client path (StreamClient + the schedule's drive) runs in a child process whose limit is set with
`resource.setrlimit` before anything opens; the whole-job path was run by hand the same way (docs/serving-client.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402
from fake_openai import Behaviour, FakeProcess  # noqa: E402

N = 5000
CHILD = """
import asyncio, json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
from llem.serving.client import ClientSettings, StreamClient
from llem.serving.schedule import drive

async def main():
    client = StreamClient(ClientSettings(base_url=sys.argv[1], model="llem/tiny-gpt2", max_tokens=2))
    await client.open()
    try:
        recs = await drive([0.0] * int(sys.argv[2]), lambda i: client.send(i, "hi"))
    finally:
        await client.close()
    fails = {}
    for r in recs:
        if not r.succeeded:
            fails[r.failure] = fails.get(r.failure, 0) + 1
    print(json.dumps({"n": len(recs), "ok": sum(r.succeeded for r in recs), "fails": fails,
                      "first_error": next((r.error for r in recs if not r.succeeded), None),
                      "pool": client.pool, "nofile": client.nofile,
                      "late_max_s": max(r.t_submit - r.t_due for r in recs)}))

asyncio.run(main())
"""


@pytest.mark.slow
def test_5000_requests_at_rate_inf_under_ulimit_1024_all_succeed() -> None:
    with FakeProcess(Behaviour()) as srv:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        p = subprocess.run([sys.executable, "-c", CHILD, srv.base_url, str(N)], capture_output=True, text=True,
                           env=env, timeout=300)
        stats = srv.stats
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["n"] == N and out["ok"] == N, out
    assert out["nofile"] == [1024, 1024] and out["pool"] == 1024 - 256
    assert stats["requests"] == N and stats["peak_active"] <= out["pool"]
    assert out["late_max_s"] > 0  # the queue for a connection shows as lateness
