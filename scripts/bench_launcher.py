"""Per-job fixed overhead of a study: job wall time minus (model load + warmup + window).

Runs `python -m llem -m seed=1,...,N` (a study of N small pytorch jobs, gaps off) as a user does, once
per launcher: llem's own launcher (`hydra/launcher=llem`, one fresh process per job) both ways it can
start a job's process, forked from its preloaded zygote (`hydra.launcher.fresh_process=fork`, the default on
Linux) and a new interpreter per job (`hydra.launcher.fresh_process=spawn`), and Hydra's `basic` launcher
(jobs in the sweep's process) for comparison, all in the same run. Every job's wall time is taken from
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


def study(arm: str, jobs: int, root: Path) -> dict[str, Any]:
    launcher, _, start = arm.partition(":")
    sweep = root / f"sweep-{launcher}-{start or 'none'}"
    cmd = [sys.executable, "-m", "llem", "-m", f"seed={','.join(str(i) for i in range(1, jobs + 1))}",
           "n=16", "pytorch.batch_size=4", "quiet=true", "study.gaps=false", f"hydra/launcher={launcher}",
           f"hydra.sweep.dir={sweep}", *([f"hydra.launcher.fresh_process={start}"] if start else [])]
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
    manifest = json.loads((sweep / "manifest.json").read_text())
    cpu = {k: [j[k] for j in manifest.get("jobs", []) if j.get(k) is not None] for k in ("parent_cpu_s", "zygote_cpu_s")}
    return {"launcher": launcher, "fresh_process": start or None, "jobs": rows, "study_wall_s": t_end - t_start,
            "start_methods": sorted({str(j.get("start_method")) for j in manifest.get("jobs", [])}), **cpu,
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
    arms = []
    if has_llem_launcher():
        arms += ["llem:fork", "llem:spawn"]
    else:
        report.skip("llem launcher", "hydra/launcher=llem (issue 4) is not installed here yet; measured with "
                                     "Hydra's basic launcher only")
    arms.append("basic")
    labels = {"llem:fork": "llem launcher, jobs forked from its zygote (default)",
              "llem:spawn": "llem launcher, hydra.launcher.fresh_process=spawn", "basic": "Hydra basic launcher (not llem's)"}
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="llem-bench-launcher-") as tmp:
        for arm in arms:
            try:
                d = study(arm, jobs, Path(tmp))
            except RuntimeError as e:
                report.skip(labels[arm], str(e).splitlines()[0])
                report.doc["data"][arm] = {"error": str(e)}
                continue
            steady = d["jobs"][1:]
            s = spread([x["overhead_s"] for x in steady])
            medians[arm] = s["median"]
            in_job = spread([x["job_s"] - x["measured_s"] for x in steady])["median"]
            outside = spread([x["wall_s"] - x["job_s"] for x in steady])["median"]
            cpu = ""
            if d.get("parent_cpu_s"):
                cpu = f"; CPU per job: launcher max {max(d['parent_cpu_s']):.3f} s"
                if d.get("zygote_cpu_s"):
                    cpu += f", zygote max {max(d['zygote_cpu_s']):.3f} s"
            report.row(f"per-job fixed overhead, {labels[arm]}", s["median"], "s",
                       f"<= {TARGET_S} s" if arm == "llem:fork" else None,
                       s["median"] <= TARGET_S if arm == "llem:fork" else None,
                       f"median of {s['n']} jobs (min {s['min']:.2f}, max {s['max']:.2f}): {outside:.2f} s "
                       f"outside run_job (process start, Hydra, launcher) + {in_job:.2f} s inside it but outside "
                       f"load/warmup/window (backend imports, env snapshot, result writes); first job "
                       f"{d['jobs'][0]['overhead_s']:.2f} s; started by {'/'.join(d['start_methods'])}{cpu}")
            d["overhead_s"] = s
            report.doc["data"][arm] = d
            print(f"  {arm}: overheads " + ", ".join(f"{x['overhead_s']:.2f}" for x in d["jobs"]), flush=True)
    if "llem:fork" in medians and "llem:spawn" in medians:
        report.row("per-job overhead saved by forking (spawn - fork, same run)",
                   medians["llem:spawn"] - medians["llem:fork"], "s", None, None,
                   f"fork / spawn = {medians['llem:fork'] / medians['llem:spawn']:.2f}")
    imp = import_time("import torch, transformers; from transformers import AutoModelForCausalLM, AutoTokenizer")
    report.row("context: fresh interpreter + import torch, transformers", imp, "s", None, None,
               "paid by every job that runs in a fresh process")
    report.doc["data"]["import_torch_transformers_s"] = imp
    report.finish(args.json)


if __name__ == "__main__":
    main()
