"""Serving scheduler lateness: how late llem sends each request vs its scheduled arrival, at 50 req/s.

Two arms, both at `--rate` (default 50 req/s, Poisson):
- engine: a real llem serving job (`backend=vllm scenario=serving`, vLLM's AsyncLLM in process, tiny
  model, `llem.job.run_job` in this process); lateness = send − scheduled arrival per request, from
  the result's `serving.latency.lateness_s` (the event loop also runs vLLM's output handler here).
- scheduler alone: `llem.serving.schedule.drive` with a send that only sleeps as long as a request
  would (no engine): the scheduler's own floor on this machine.
Target: lateness p99 < 5 ms (issue 16). Also reported: achieved / offered request rate.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Report, parse, parser, run_llem  # noqa: E402

TARGET_S = 0.005


def scheduler_alone(n: int, rate: float, hold_s: float) -> list[float]:
    from llem.measure.latency import RequestRecord
    from llem.serving.arrivals import arrival_offsets
    from llem.serving.schedule import drive, lateness_s

    async def send(i: int) -> RequestRecord:
        t = time.perf_counter()
        await asyncio.sleep(hold_s)
        return RequestRecord(index=i, input_tokens=0, output_tokens=1, t_submit=t, t_first_token=t,
                             t_end=time.perf_counter())

    return lateness_s(asyncio.run(drive(arrival_offsets(n, rate, 1.0, seed=0), send)))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rate", type=float, default=50.0)
    args = parse(ap)
    from llem.measure.stats import percentile

    n = 150 if args.quick else 500
    report = Report("serving", args.quick, f"lateness = send - scheduled arrival, {n} Poisson arrivals at "
                                           f"{args.rate:g} req/s; engine arm = llem job on vLLM AsyncLLM (tiny model)")
    late = scheduler_alone(n, args.rate, hold_s=0.05)
    p99 = percentile(late, 99)
    report.row("scheduler alone: lateness p99", p99 * 1000, "ms", "< 5 ms", p99 < TARGET_S,
               f"p50 {percentile(late, 50) * 1000:.3f} ms, max {max(late) * 1000:.3f} ms")
    report.doc["data"]["scheduler_alone_lateness_s"] = {"p50": percentile(late, 50), "p99": p99, "max": max(late)}
    if importlib.util.find_spec("vllm") is None:
        report.skip("engine arm", "vllm is not installed")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_llem(["backend=vllm", "model=tiny", "scenario=serving", f"scenario.request_rate={args.rate}",
                          f"n={n}", "dataset.input_tokens=32", "vllm.max_tokens=16", "vllm.enforce_eager=true",
                          "energy=none", "quiet=true"], Path(tmp))
        s = r.serving
        lat = s["latency"]["lateness_s"]
        report.row("vLLM AsyncLLM: lateness p99", lat["p99"] * 1000, "ms", "< 5 ms", lat["p99"] < TARGET_S,
                   f"p50 {lat['p50'] * 1000:.3f} ms, max {lat['max'] * 1000:.3f} ms, {lat['n']} requests")
        report.row("vLLM AsyncLLM: achieved / offered rate", s["achieved_rate_s"] / args.rate, "ratio", None, None,
                   f"{s['achieved_rate_s']:.1f} req/s completed / window, TTFT p50 "
                   f"{s['latency']['ttft_s']['p50'] * 1000:.1f} ms")
        report.doc["data"]["engine"] = {"lateness_s": lat, "achieved_rate_s": s["achieved_rate_s"],
                                        "ttft_s": s["latency"]["ttft_s"], "itl_s": s["latency"]["itl_s"]}
    report.finish(args.json)


if __name__ == "__main__":
    main()
