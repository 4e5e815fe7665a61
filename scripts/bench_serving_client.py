"""Client capacity: llem's HTTP client beside vLLM's benchmark client, against the same fast fake server.

    .venv/bin/python scripts/bench_serving_client.py [--quick] [--n-inf 2000] [--reps 3]

The server is tests/fakes/fake_openai.py in its own process (no TTFT, no gaps: 16 tokens in 16 chunks at
once), so what limits a run is the client. Both clients run in this process, alternately (ABBA):
- vllm: vLLM's own client as `vllm bench serve` drives it (vllm/benchmarks/serve.py `get_request` for
  the arrivals, `async_request_openai_completions` per request, an aiohttp session with its connector
  settings); due time of request i = start + its cumulative delay (recomputed with the same numpy seed);
- llem: `llem.serving.schedule.arrival_schedule` + `drive` + `llem.serving.client.StreamClient` (the pool
  from the open-file limit), as `backend=openai` sends.
Figures: requests/s sustained at rate inf (completed / wall time of the run), and lateness p99
(send − due) at 50 and 500 req/s (Poisson, rescaled to n/rate as vLLM does). Target: llem not slower
(sustained rate ratio llem/vLLM >= 0.95; lateness p99 <= vLLM's + 1 ms). Also the client process's CPU time
per request at rate inf (the server is another process), which a busy machine's wall clock does not blur.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "fakes"))
from bench_common import RESULTS_DIR, Report, machine_info, paired_ratio, parse, parser  # noqa: E402

MAX_TOKENS = 16


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


async def vllm_client(base: str, n: int, rate: float, seed: int) -> dict[str, float]:
    import aiohttp
    import numpy as np
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions
    from vllm.benchmarks.serve import get_request

    reqs = [SimpleNamespace(prompt=f"hi {i}", prompt_len=2, expected_output_len=MAX_TOKENS) for i in range(n)]
    delays = [0.0] * n
    if rate != float("inf"):
        np.random.seed(seed)
        gaps = np.random.gamma(shape=1.0, scale=1.0 / rate, size=n)
        cum = np.cumsum(gaps)
        delays = list(cum * (n / rate) / cum[-1])
    np.random.seed(seed)
    import vllm.benchmarks.serve as serve_mod

    class Clock:  # get_request's start_ts is its first time.time(): note that instant on perf_counter
        first: float | None = None

        def time(self) -> float:
            if self.first is None:
                self.first = time.perf_counter()
            return time.time()

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

    clock = Clock()
    serve_mod.time = clock  # type: ignore[assignment]
    cpu0 = time.process_time()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 60 * 60)) as session:
        tasks = []
        try:
            async for req, _ in get_request(reqs, rate, 1.0):
                inp = RequestFuncInput(prompt=req.prompt, api_url=base + "/completions", prompt_len=2,
                                       output_len=MAX_TOKENS, model="llem/tiny-gpt2")
                tasks.append(asyncio.create_task(async_request_openai_completions(inp, session)))
        finally:
            serve_mod.time = time  # type: ignore[assignment]
        t0 = clock.first
        outs = await asyncio.gather(*tasks)
        t1 = time.perf_counter()
    assert t0 is not None
    late = [o.start_time - (t0 + d) for o, d in zip(outs, delays)]
    return {"completed": sum(o.success for o in outs), "wall_s": t1 - t0, "late_p99_s": p99(late),
            "req_s": sum(o.success for o in outs) / (t1 - t0), "cpu_ms_per_req": (time.process_time() - cpu0) * 1e3 / n}


async def llem_client(base: str, n: int, rate: float, seed: int) -> dict[str, float]:
    from llem.serving.client import ClientSettings, StreamClient
    from llem.serving.schedule import arrival_schedule, drive

    sc = SimpleNamespace(request_rate=rate, burstiness=1.0, ramp_up=None, ramp_up_start_rps=None,
                         ramp_up_end_rps=None)
    offsets = arrival_schedule(n, sc, seed).offsets
    client = StreamClient(ClientSettings(base_url=base, model="llem/tiny-gpt2", max_tokens=MAX_TOKENS))
    await client.open()
    cpu0 = time.process_time()
    try:
        t0 = time.perf_counter()
        recs = await drive(offsets, lambda i: client.send(i, f"hi {i}"), t0=t0)
        t1 = time.perf_counter()
    finally:
        await client.close()
    ok = sum(r.succeeded for r in recs)
    return {"completed": ok, "wall_s": t1 - t0, "late_p99_s": p99([r.t_submit - r.t_due for r in recs]),
            "req_s": ok / (t1 - t0), "cpu_ms_per_req": (time.process_time() - cpu0) * 1e3 / n}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n-inf", type=int, default=2000, help="requests of the rate-inf run (default 2000)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each finite-rate run (default 6 s)")
    ap.add_argument("--reps", type=int, default=3, help="ABBA repetitions (default 3)")
    a = parse(ap)
    if a.quick:
        a.n_inf, a.seconds, a.reps = 500, 2.0, 1
    rep = Report("serving_client_capacity", a.quick, __doc__.split("\n\n")[2].strip())
    from fake_openai import Behaviour, FakeProcess

    arms = {"llem": llem_client, "vllm": vllm_client}
    runs = [("inf", float("inf"), a.n_inf), ("50", 50.0, int(50 * a.seconds)), ("500", 500.0, int(500 * a.seconds))]
    got: dict[tuple[str, str], list[dict[str, float]]] = {(k, r[0]): [] for k in arms for r in runs}
    with FakeProcess(Behaviour(output_tokens=MAX_TOKENS)) as srv:
        for r in range(a.reps):
            for tag, rate, n in runs:
                for name in (["vllm", "llem"] if r % 2 == 0 else ["llem", "vllm"]):
                    out = asyncio.run(arms[name](srv.base_url, n, rate, r))
                    got[(name, tag)].append(out)
                    print(f"  rep {r + 1} rate {tag} {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()),
                          flush=True)
    ours = [x["req_s"] for x in got[("llem", "inf")]]
    theirs = [x["req_s"] for x in got[("vllm", "inf")]]
    ratio = paired_ratio(ours, theirs)
    rep.row("llem/vLLM requests/s sustained at rate inf", ratio["median"], "ratio", ">= 0.95",
            ratio["median"] >= 0.95, f"llem {[round(x, 1) for x in ours]} vs vLLM {[round(x, 1) for x in theirs]} req/s "
            f"({a.n_inf} requests; completed llem {[x['completed'] for x in got[('llem', 'inf')]]}, "
            f"vLLM {[x['completed'] for x in got[('vllm', 'inf')]]})")
    rep.doc["data"]["inf"] = {"llem": got[("llem", "inf")], "vllm": got[("vllm", "inf")], "ratio": ratio}
    # CPU time of the client process per request: what the client costs, robust to a busy machine's wall clock
    cpu_l = [x["cpu_ms_per_req"] for x in got[("llem", "inf")]]
    cpu_v = [x["cpu_ms_per_req"] for x in got[("vllm", "inf")]]
    cpu_ratio = paired_ratio(cpu_l, cpu_v)
    rep.row("llem/vLLM client CPU per request at rate inf", cpu_ratio["median"], "ratio", "<= 1.05",
            cpu_ratio["median"] <= 1.05, f"llem {[round(x, 3) for x in cpu_l]} vs vLLM {[round(x, 3) for x in cpu_v]} "
            "ms CPU per request (this process: client only; the server is another process)")
    rep.doc["data"]["cpu_ratio"] = cpu_ratio
    for tag in ("50", "500"):
        lo = [x["late_p99_s"] for x in got[("llem", tag)]]
        lv = [x["late_p99_s"] for x in got[("vllm", tag)]]
        med_l, med_v = statistics.median(lo), statistics.median(lv)
        rep.row(f"lateness p99 at {tag} req/s: llem (vLLM {med_v * 1e3:.2f} ms)", med_l, "s",
                "<= vLLM's + 1 ms", med_l <= med_v + 1e-3,
                f"llem {[round(x * 1e3, 2) for x in lo]} ms vs vLLM {[round(x * 1e3, 2) for x in lv]} ms; achieved "
                f"llem {[round(x['req_s'], 1) for x in got[('llem', tag)]]} vs vLLM "
                f"{[round(x['req_s'], 1) for x in got[('vllm', tag)]]} req/s")
        rep.doc["data"][tag] = {"llem": got[("llem", tag)], "vllm": got[("vllm", tag)]}
    rep.doc["machine"] = machine_info()
    path = a.json or RESULTS_DIR / f"serving-client-{dt.date.today().isoformat()}-{socket.gethostname()}.json"
    rep.finish(path)
    print(f"written {path}")


if __name__ == "__main__":
    main()
