"""Per-token timing overhead: llem's output tok/s with `pytorch.latency_tracking=true` vs `false`.

Both arms are full llem jobs (`llem.job.run_job` in this process, figure = `throughput.output_tok_s`),
identical except for that one key, run in alternating order (ABBA). With tracking on, transformers
calls llem's streamer once per generation step and the streamer appends one `perf_counter()`.
Overhead = 1 - on/off (median of pair ratios); target <= 2 %. Batch size 1 is the worst case (most
steps per token); batch 8 is shown beside it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Report, interleave, paired_ratio, parse, parser, progress, run_llem, spread  # noqa: E402

TARGET_PCT = 2.0


def overrides(batch_size: int, n: int, tracking: bool) -> list[str]:
    return ["backend=pytorch", "model=tiny", "dataset=synthetic", "dataset.input_tokens=32", f"n={n}",
            f"pytorch.batch_size={batch_size}", "pytorch.max_output_tokens=32", "quiet=true",
            "save_requests=false", f"pytorch.latency_tracking={str(tracking).lower()}"]


def main() -> None:
    ap = parser(__doc__)
    args = parse(ap)
    report = Report("timing_overhead", args.quick,
                    "llem.job.run_job in-process, latency_tracking on vs off, interleaved ABBA; "
                    "overhead = 1 - median pair ratio (on/off) of output tok/s")
    reps = 3 if args.quick else 11
    shapes = [(1, 8 if args.quick else 16)] + ([] if args.quick else [(8, 64)])
    with tempfile.TemporaryDirectory(prefix="llem-bench-timing-") as tmp:
        for bs, n in shapes:
            def arm(tracking: bool, bs: int = bs, n: int = n) -> float:
                r = run_llem(overrides(bs, n, tracking), Path(tmp))
                assert r.latency["ttft_s"]["n"] if tracking else True, "tracking on must give TTFT"
                return r.throughput["output_tok_s"]

            arm(True)  # one-time imports and allocator growth, not counted
            res = interleave({"on": lambda: arm(True), "off": lambda: arm(False)}, reps,
                             progress(f"batch {bs}"))
            ratio = paired_ratio(res["on"], res["off"])
            pct = (1 - ratio["median"]) * 100
            son, soff = spread(res["on"]), spread(res["off"])
            report.row(f"timing overhead, batch {bs}: 1 - on/off tok/s", pct, "%", f"<= {TARGET_PCT} %",
                       pct <= TARGET_PCT,
                       f"on {son['median']:,.0f} / off {soff['median']:,.0f} tok/s (medians), pair-ratio "
                       f"IQR {ratio['p25']:.3f}-{ratio['p75']:.3f}, {reps} reps each")
            report.doc["data"][f"batch_{bs}"] = {"n": n, "on_tok_s": res["on"], "off_tok_s": res["off"],
                                                 "on": son, "off": soff, "ratio": ratio,
                                                 "overhead_pct": pct}
    report.note("negative overhead = tracking-on ran faster than off: the difference is inside the noise")
    report.finish(args.json)


if __name__ == "__main__":
    main()
