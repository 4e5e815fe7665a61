"""Planning speed of llem's sweeper: 1,000 jobs expanded, composed, validated, hashed and ordered.

    .venv/bin/python scripts/bench_plan.py [--sweep "..."] [--naive-sample 20]
    .venv/bin/python scripts/bench_plan.py --sweep "$(python scripts/bench_plan.py --print-10k)"  # 10,000

Prints the time of the sweeper's own plan step (the code `python -m llem -m ...` runs before the
first job) and, for comparison in the same run, Hydra's per-job compose (what BasicSweeper's
validate_batch_is_legal does) measured on a sample and scaled to the same number of jobs.
Targets on the 2-core dev machine: <= 5 s for 1,000 jobs, <= 10 s for 10,000 (issue 15). The CPU
time of the plan step is printed beside the wall time: on a shared machine it is the figure to compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_SWEEP = ("model=tiny,tiny-llama precision=fp32,fp16 pytorch.batch_size=range(1,6) "
                 "pytorch.max_output_tokens=range(1,51)")  # 2 × 2 × 5 × 50 = 1,000 configs, 1 cycle
SWEEP_10K = DEFAULT_SWEEP.replace("range(1,51)", "range(1,501)")  # 10,000 configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=DEFAULT_SWEEP, help="sweep overrides (space separated)")
    ap.add_argument("--naive-sample", type=int, default=20, help="jobs composed the naive way")
    ap.add_argument("--repeat", type=int, default=3, help="plan this many times, report the median")
    ap.add_argument("--print-10k", action="store_true", help="print the 10,000-config sweep and exit")
    args = ap.parse_args()
    if args.print_10k:
        print(SWEEP_10K)
        return

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext, RunMode

    import llem.config.store  # noqa: F401
    from hydra_plugins.llem_sweeper.llem_sweeper import LlemSweeper
    from llem.config.paths import conf_dir

    sweep = args.sweep.split()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(conf_dir()), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        # the launcher plays no part in planning: basic keeps the benchmark independent of it
        overrides = [f"hydra.sweep.dir={Path(tmp) / 'study'}", "hydra/launcher=basic", "study.max_jobs=100000",
                     *sweep]
        master = loader.load_configuration("config", overrides, RunMode.MULTIRUN)
        times, cpu, plan = [], [], None
        for _ in range(args.repeat):
            sweeper = LlemSweeper()
            sweeper.config, sweeper.hydra_context = master, HydraContext(config_loader=loader, callbacks=None)  # type: ignore[arg-type]
            t0, c0 = time.perf_counter(), time.process_time()
            plan = sweeper.plan([*sweep, "study.max_jobs=100000"])
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        assert plan is not None
        n = len(plan.to_launch)
        fast = statistics.median(times)

        jobs = [j.overrides for j in plan.to_launch[: args.naive_sample]]
        t0 = time.perf_counter()
        for job in jobs:
            loader.load_sweep_config(master, list(job))
        naive_per_job = (time.perf_counter() - t0) / len(jobs)

    print(f"sweep: {' '.join(sweep)}")
    print(f"planned {n} jobs ({len(plan.valid_configs)} configs, {len(plan.skipped_configs)} skipped) "
          f"with {plan.notes[-1].split('with ')[-1]}")
    print(f"plan (expand + compose + validate + hash + order): {fast:.2f} s median of {args.repeat} "
          f"({fast / n * 1000:.2f} ms/job; CPU {statistics.median(cpu):.2f} s)  target <= 5 s per 1,000 jobs, "
          "<= 10 s per 10,000")
    print(f"naive Hydra compose per job: {naive_per_job * 1000:.1f} ms (sample of {len(jobs)}) "
          f"→ {naive_per_job * n:.1f} s for {n} jobs")
    print(f"speed-up: {naive_per_job * n / fast:.1f}×")


if __name__ == "__main__":
    main()
