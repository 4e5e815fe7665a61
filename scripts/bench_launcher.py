"""Per-job fixed overhead of a study: job wall time minus (model load + warmup + window).

Runs `python -m llem -m seed=1,...,N` (a study of N small pytorch jobs, gaps off) as a user does, once
per launcher: llem's own launcher (`hydra/launcher=llem`, one fresh process per job) and Hydra's
`basic` launcher (jobs in the sweep's process) for comparison. Every job's wall time is taken from
the jobs' own `result.json`: the time from the previous job's `finished_at` (for the first job, from
the moment the study command started) to its own `finished_at`, so everything the launcher, the
sweeper and the job process do between two measured parts counts. Overhead = that wall time minus
`timing.load_s + timing.warmup_s + timing.window_s`; median over the jobs after the first (the first
also pays the sweep's own start and planning, shown apart). Target <= 1.5 s for pytorch here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, Report, parse, parser, spread  # noqa: E402

TARGET_S = 1.5


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def study(launcher: str, jobs: int, root: Path) -> dict[str, Any]:
    sweep = root / f"sweep-{launcher}"
    cmd = [sys.executable, "-m", "llem", "-m", f"seed={','.join(str(i) for i in range(1, jobs + 1))}",
           "n=16", "pytorch.batch_size=4", "quiet=true", "study.gaps=false", f"hydra/launcher={launcher}",
           f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    t_start = time.time()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    t_end = time.time()
    if p.returncode != 0:
        raise RuntimeError(f"study with hydra/launcher={launcher} exited {p.returncode}:\n"
                           f"{(p.stdout + p.stderr)[-3000:]}")
    results = [json.loads(f.read_text()) for f in sweep.rglob("result.json")]
    results = [r for r in results if r.get("status") == "completed"]
    if len(results) != jobs:
        raise RuntimeError(f"hydra/launcher={launcher}: {len(results)} of {jobs} jobs completed")
    results.sort(key=lambda r: _ts(r["finished_at"]))
    prev = t_start
    rows = []
    for r in results:
        end = _ts(r["finished_at"])
        t = r["timing"]
        measured = t["load_s"] + t["warmup_s"] + t["window_s"]
        rows.append({"wall_s": end - prev, "measured_s": measured, "overhead_s": end - prev - measured,
                     "job_s": t["job_s"], "load_s": t["load_s"], "warmup_s": t["warmup_s"],
                     "window_s": t["window_s"]})
        prev = end
    measured_total = sum(x["measured_s"] for x in rows)
    return {"launcher": launcher, "jobs": rows, "study_wall_s": t_end - t_start,
            "after_last_job_s": t_end - prev, "study_overhead_per_job_s": (t_end - t_start - measured_total) / jobs}


def import_time(code: str, reps: int = 3) -> float:
    """Median seconds of a fresh interpreter running `code` (what each job process pays first)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def has_llem_launcher() -> bool:
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    return any("llem" in c.__module__ for c in Plugins.instance().discover(Launcher))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--jobs", type=int, default=None, help="jobs per study (default 7, quick 3)")
    args = parse(ap)
    jobs = args.jobs or (3 if args.quick else 7)
    report = Report("launcher", args.quick,
                    f"`python -m llem -m seed=1..{jobs}` subprocess per launcher; per-job wall = previous "
                    "job's finished_at (or study start) to this job's finished_at, from result.json")
    launchers = []
    if has_llem_launcher():
        launchers.append("llem")
    else:
        report.skip("llem launcher", "hydra/launcher=llem (issue 4) is not installed here yet; measured with "
                                     "Hydra's basic launcher only")
    launchers.append("basic")
    with tempfile.TemporaryDirectory(prefix="llem-bench-launcher-") as tmp:
        for launcher in launchers:
            try:
                d = study(launcher, jobs, Path(tmp))
            except RuntimeError as e:
                report.skip(f"{launcher} launcher", str(e).splitlines()[0])
                report.doc["data"][launcher] = {"error": str(e)}
                continue
            steady = d["jobs"][1:]
            s = spread([x["overhead_s"] for x in steady])
            in_job = spread([x["job_s"] - x["measured_s"] for x in steady])["median"]
            outside = spread([x["wall_s"] - x["job_s"] for x in steady])["median"]
            label = "llem launcher" if launcher == "llem" else "Hydra basic launcher (not llem's)"
            report.row(f"per-job fixed overhead, {label}", s["median"], "s", f"<= {TARGET_S} s",
                       s["median"] <= TARGET_S,
                       f"median of {s['n']} jobs (min {s['min']:.2f}, max {s['max']:.2f}): {outside:.2f} s "
                       f"outside run_job (process start, Hydra, launcher) + {in_job:.2f} s inside it but outside "
                       f"load/warmup/window (backend imports, env snapshot, result writes); first job "
                       f"{d['jobs'][0]['overhead_s']:.2f} s")
            d["overhead_s"] = s
            report.doc["data"][launcher] = d
            print(f"  {launcher}: overheads " + ", ".join(f"{x['overhead_s']:.2f}" for x in d["jobs"]), flush=True)
    imp = import_time("import torch, transformers; from transformers import AutoModelForCausalLM, AutoTokenizer")
    report.row("context: fresh interpreter + import torch, transformers", imp, "s", None, None,
               "paid by every job that runs in a fresh process")
    report.doc["data"]["import_torch_transformers_s"] = imp
    report.finish(args.json)


if __name__ == "__main__":
    main()
