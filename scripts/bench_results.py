"""How long `llem.results.load` takes on 10,000 result.json files (target: ≤ 5 s on the dev machine).

    .venv/bin/python scripts/bench_results.py [--jobs 10000] [--keep DIR]

Writes a tree like real multiruns (100 sweep folders × 100 job folders, each with result.json of a
real result's size and a `.hydra/` folder), then times `load` cold (first call) and warm (page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llem.results import load  # noqa: E402
from llem.results.example import example_result  # noqa: E402


def generate(root: Path, jobs: int, per_sweep: int = 100) -> None:
    """Plain writes (no fsync per file): the benchmark measures reading, not writing."""
    for i in range(jobs):
        sweep, index = divmod(i, per_sweep)
        sweep_dir = root / "multirun" / "2026-11-23" / f"{sweep:02d}-00-00"
        job_dir = sweep_dir / str(index)
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        if index == 0:
            (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
        batch = 2 ** (index % 6)
        result, _ = example_result(
            overrides=[f"pytorch.batch_size={batch}", "n=8", f"seed={index % 5}"],
            config_hash=f"{sweep:08x}{index % 30:08x}", cycle=index // 30, job_index=index,
            output_tok_s=300.0 * batch ** 0.8, j_per_output_token=0.2 / batch ** 0.5,
            batch_size=batch, job_dir=str(job_dir))
        (job_dir / "result.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--keep", help="write the tree here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        generate(root, args.jobs)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("result.json"))
        os.sync()
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            df = load(root)
            timings.append(time.perf_counter() - t0)
        assert len(df) == args.jobs, (len(df), args.jobs)
        print(f"bench_results: {args.jobs} result files ({size / 1e6:.1f} MB, generated in {gen_s:.1f} s)")
        print(f"  llem.results.load: first {timings[0]:.2f} s, best of 3 {min(timings):.2f} s "
              f"({args.jobs / min(timings):,.0f} files/s) → {df.shape[0]} rows × {df.shape[1]} columns")
        print(f"  target ≤ 5 s for 10,000 files: {'met' if min(timings) <= 5 * args.jobs / 10_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
