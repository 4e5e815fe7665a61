"""Run optimum-benchmark (the peer tool) on a local model folder and print its figures as one JSON line.

Runs inside the peer's own virtual environment (.bench-venv-peer: optimum-benchmark 0.6.0,
transformers<5), never in llem's: `scripts/bench_peer.py` starts it as a subprocess. The scenario is
optimum-benchmark's own `inference` scenario with its pytorch backend, default process launcher and
default trackers (per-token latency tracking, as a user of the tool gets it), on the shape asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="local model folder (no hub)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--duration", type=int, default=10, help="optimum-benchmark's minimum tracked seconds")
    ap.add_argument("--warmup-runs", type=int, default=10)
    ap.add_argument("--launcher", choices=["process", "inline"], default="process")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from optimum_benchmark import (
        Benchmark,
        BenchmarkConfig,
        InferenceConfig,
        InlineConfig,
        ProcessConfig,
        PyTorchConfig,
    )
    from optimum_benchmark.logging_utils import setup_logging

    setup_logging(level="ERROR")
    launcher = ProcessConfig() if args.launcher == "process" else InlineConfig()
    scenario = InferenceConfig(
        latency=True, memory=False, energy=False,
        iterations=args.iterations, duration=args.duration, warmup_runs=args.warmup_runs,
        input_shapes={"batch_size": args.batch_size, "sequence_length": args.input_tokens},
        generate_kwargs={"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens},
    )
    backend = PyTorchConfig(model=args.model, device="cpu", task="text-generation", no_weights=False)
    config = BenchmarkConfig(name="llem-peer", launcher=launcher, scenario=scenario, backend=backend)
    t0 = time.perf_counter()
    report = Benchmark.launch(config).to_dict()
    wall_s = time.perf_counter() - t0
    gen = report["generate"]
    lat = gen["latency"]
    out = {
        "tool": "optimum-benchmark",
        "launcher": args.launcher,
        "generate_latency_mean_s": lat["mean"],
        "generate_latency_p50_s": lat.get("p50"),
        "generate_latency_stdev_s": lat.get("stdev"),
        "generate_count": lat.get("count"),
        "generate_latency_values_s": lat.get("values"),
        "prefill_latency_mean_s": ((report.get("prefill") or {}).get("latency") or {}).get("mean"),
        "generate_throughput": gen["throughput"]["value"],
        "generate_throughput_unit": gen["throughput"]["unit"],
        "decode_throughput": (report.get("decode") or {}).get("throughput", {}).get("value"),
        "per_token_latency_mean_s": ((report.get("per_token") or {}).get("latency") or {}).get("mean"),
        "wall_s": wall_s,
    }
    print("PEER_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
