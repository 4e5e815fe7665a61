"""Every llem benchmark in one run: one table of ratios and figures vs targets, saved with machine info.

    .venv/bin/python scripts/bench_all.py [--quick] [--only fidelity,peer,...]

Runs each `scripts/bench_*.py` in its own subprocess (one after another, never two at once), plus the
planning and results-loading benchmarks of the sweeper and results parts (`scripts/bench_plan.py`,
`scripts/bench_results.py`) when they exist, and writes
`benchmarks/results/<date>-<host>.json` and `benchmarks/results/latest.json`.
About 8-10 minutes on a 2-core CPU machine; `--quick` is a smoke run of about 3 minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, RESULTS_DIR, machine_info, parse, parser, render_rows, write_json  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
OURS = ("fidelity", "timing_overhead", "launcher", "sampler", "peer", "gaps")
THEIRS = ("plan", "results")
PLAN_TARGET_S, RESULTS_TARGET_S = 5.0, 5.0


def run_ours(name: str, quick: bool, threads: int, tmp: Path, timeout: float) -> dict[str, Any]:
    if name == "fidelity":  # one process per engine: nothing of the pytorch arms left in the vLLM ones
        parts = [_run_one(name, quick, threads, tmp, timeout, ["--backend", b]) for b in ("pytorch", "vllm")]
        return {"benchmark": name, "rows": [r for p in parts for r in p.get("rows", [])],
                "skipped": [s for p in parts for s in p.get("skipped", [])], "parts": parts}
    return _run_one(name, quick, threads, tmp, timeout, [])


def _run_one(name: str, quick: bool, threads: int, tmp: Path, timeout: float, extra: list[str]) -> dict[str, Any]:
    out = tmp / f"{name}{''.join(extra).replace('-', '_')}.json"
    cmd = [sys.executable, str(SCRIPTS / f"bench_{name}.py"), "--json", str(out), "--threads", str(threads), *extra]
    cmd += ["--quick"] if quick else []
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(p.stdout)
    if p.returncode != 0 or not out.is_file():
        return {"benchmark": name, "rows": [], "skipped": [f"skipped: {name}: exited {p.returncode}: "
                                                            f"{_last_line(p.stderr or p.stdout)}"],
                "error": (p.stdout + p.stderr)[-4000:], "elapsed_s": time.perf_counter() - t0}
    return json.loads(out.read_text())


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else ""


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1).replace(",", "")) if m else None


def run_theirs(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    """The sweeper's and the results part's benchmarks print text; their headline figures are read
    from it (and the raw output kept), so a change of wording shows as 'unparsed', not as a wrong figure."""
    script = SCRIPTS / f"bench_{name}.py"
    doc: dict[str, Any] = {"benchmark": name, "rows": [], "skipped": [], "notes": []}
    if not script.is_file():
        doc["skipped"].append(f"skipped: {name}: {script.relative_to(REPO)} does not exist yet")
        print(doc["skipped"][-1])
        return doc
    args = {"plan": ["--repeat", "1"] if quick else [], "results": ["--jobs", "2000"] if quick else []}[name]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    doc["elapsed_s"] = time.perf_counter() - t0
    doc["output"] = (p.stdout + p.stderr)[-4000:]
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        doc["skipped"].append(f"skipped: {name}: exited {p.returncode}: {_last_line(p.stderr or p.stdout)}")
        return doc
    text = p.stdout
    if name == "plan":
        jobs = _num(r"planned ([\d,]+) jobs", text)
        secs = _num(r"plan \([^)]*\):\s*([\d.]+) s", text)
        naive = _num(r"naive Hydra compose per job:.*?([\d.]+) s for", text)
        if secs is None or jobs is None:
            doc["skipped"].append("skipped: plan: output not understood (see 'output')")
            return doc
        per_1000 = secs * 1000 / jobs
        doc["rows"].append({"metric": f"planning: {jobs:,.0f}-job study plan", "value": secs, "unit": "s",
                            "target": f"<= {PLAN_TARGET_S} s / 1,000 jobs", "met": per_1000 <= PLAN_TARGET_S,
                            "detail": f"{per_1000:.2f} s per 1,000 jobs" +
                                      (f"; Hydra's per-job compose would take {naive:.1f} s" if naive else "")})
    else:
        files = _num(r"bench_results: ([\d,]+) result files", text)
        best = _num(r"best of \d+ ([\d.]+) s", text)
        if best is None or files is None:
            doc["skipped"].append("skipped: results: output not understood (see 'output')")
            return doc
        per_10k = best * 10_000 / files
        doc["rows"].append({"metric": f"results loading: {files:,.0f} result.json -> DataFrame", "value": best,
                            "unit": "s", "target": f"<= {RESULTS_TARGET_S} s / 10,000", "met": per_10k <= RESULTS_TARGET_S,
                            "detail": f"best of 3; {per_10k:.2f} s per 10,000 files"})
    return doc


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(OURS + THEIRS)}")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = parse(ap)
    only = [x for x in args.only.split(",") if x]
    unknown = set(only) - set(OURS + THEIRS)
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}; allowed {', '.join(OURS + THEIRS)}")
    selected = only or list(OURS + THEIRS)
    machine = machine_info()
    print(f"llem benchmarks on {machine['host']}: {machine['cpu']}, {machine['cores']} cores; "
          f"load average {machine['load_avg']}", flush=True)
    t0 = time.perf_counter()
    docs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llem-bench-all-") as tmp:
        for name in selected:
            print(f"\n== {name} ==", flush=True)
            if name in OURS:
                docs[name] = run_ours(name, args.quick, args.threads, Path(tmp), timeout=600)
            else:
                docs[name] = run_theirs(name, args.quick, timeout=300)
    rows = [r for d in docs.values() for r in d.get("rows", [])]
    skipped = [s for d in docs.values() for s in d.get("skipped", [])]
    machine["load_avg_end"] = machine_info()["load_avg"]
    summary = {"schema": "llem-benchmarks/1", "quick": args.quick, "machine": machine,
               "elapsed_s": time.perf_counter() - t0, "rows": rows, "skipped": skipped, "benchmarks": docs}
    print("\n== summary ==")
    print(render_rows(rows))
    for s in skipped:
        print(s)
    print(f"load average start {machine['load_avg']}, end {machine['load_avg_end']}; "
          f"{summary['elapsed_s']:.0f} s in all")
    if args.json:
        write_json(args.json, summary)
    if not args.no_save:
        stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
        path = RESULTS_DIR / f"{stamp}-{machine['host']}{'-quick' if args.quick else ''}.json"
        write_json(path, summary)
        print(f"saved {path.relative_to(REPO)}")
        if not args.quick and not only:  # latest.json: the last complete, full-length run
            write_json(RESULTS_DIR / "latest.json", summary)
            print(f"saved {(RESULTS_DIR / 'latest.json').relative_to(REPO)}")


if __name__ == "__main__":
    main()
