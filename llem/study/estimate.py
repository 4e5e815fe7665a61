"""Wall-time estimate of a study (pure apart from reading earlier result.json files).

A config measured before (same `config_hash`, status completed) is estimated by the median of its
earlier durations (see `load_history`); a config never measured takes the median of this study's configs that were,
else `study.job_estimate_s`. Gaps come from `llem.study.gaps.gap_before`, exactly as the launcher waits.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem.result import RESULT_FILE
from llem.study.gaps import Gaps, gap_before

MAX_HISTORY_FILES = 20_000  # bound the scan of a large multirun/ tree


@dataclass(frozen=True)
class Estimate:
    seconds: float
    source: str  # history (n=K) | study median | default


def job_seconds(result: Mapping[str, object]) -> float | None:
    """In-job seconds of a completed result (`timing.job_s`), else None."""
    if result.get("status") != "completed":
        return None
    timing = result.get("timing")
    value = timing.get("job_s") if isinstance(timing, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _files(root: Path, name: str, recursive: bool, limit: int) -> list[Path]:
    """`name` files of the multirun layout (<root>/<date>/<time>/<job>/) or, recursive, anywhere."""
    if recursive:
        found = root.rglob(name)
    else:
        found = itertools.chain(root.glob(f"*/*/{name}"), root.glob(f"*/*/*/{name}"), root.glob(f"*/{name}"))
    return list(itertools.islice(found, limit))


def load_history(root: Path | None, recursive: bool = False, limit: int = MAX_HISTORY_FILES,
                 ) -> dict[str, list[float]]:
    """config_hash → seconds per completed job found under `root`.

    A job's seconds are the launcher's `duration_s` in its study's manifest.json (process start
    included) where recorded, else the job's own `timing.job_s` from result.json. Without
    `recursive`, only the multirun layout is searched: `<root>/<date>/<time>/<job>/result.json`.
    """
    found: dict[str, list[float]] = {}
    if root is None or not root.is_dir():
        return found
    seen_dirs: set[str] = set()
    for path in _files(root, "manifest.json", recursive, limit):
        m = _read(path)
        for job in m.get("jobs", []) if isinstance(m, dict) else []:
            seconds, chash = job.get("duration_s"), job.get("config_hash")
            if job.get("status") == "completed" and isinstance(seconds, (int, float)) and isinstance(chash, str):
                found.setdefault(chash, []).append(float(seconds))
                seen_dirs.add(str(Path(job.get("job_dir") or path.parent / str(job.get("index"))).resolve()))
    for path in _files(root, RESULT_FILE, recursive, limit):
        if str(path.parent.resolve()) in seen_dirs:
            continue
        result = _read(path)
        seconds = job_seconds(result) if isinstance(result, dict) else None
        ident = result.get("identity") if isinstance(result, dict) else None
        chash = ident.get("config_hash") if isinstance(ident, dict) else None
        if seconds is not None and isinstance(chash, str):
            found.setdefault(chash, []).append(seconds)
    return found


def config_estimates(config_hashes: Iterable[str], history: Mapping[str, Sequence[float]],
                     default_s: float) -> dict[str, Estimate]:
    """Per config hash: its own history's median, else the median over the study's known configs."""
    hashes = list(dict.fromkeys(config_hashes))
    known = {h: Estimate(statistics.median(history[h]), f"history (n={len(history[h])})")
             for h in hashes if history.get(h)}
    fallback = (Estimate(statistics.median(e.seconds for e in known.values()), "study median") if known
                else Estimate(float(default_s), "default"))
    return {h: known.get(h, fallback) for h in hashes}


@dataclass(frozen=True)
class WallTime:
    jobs_s: float
    gaps_s: float

    @property
    def total_s(self) -> float:
        return self.jobs_s + self.gaps_s


def wall_time(jobs: Sequence[tuple[str, int]], estimates: Mapping[str, Estimate], gaps: Gaps) -> WallTime:
    """jobs: (config_hash, cycle) in launch order."""
    jobs_s = sum(estimates[h].seconds for h, _ in jobs)
    gaps_s, prev = 0.0, None
    for _, cycle in jobs:
        gaps_s += gap_before(prev, cycle, gaps)
        prev = cycle
    return WallTime(jobs_s, gaps_s)


def human_seconds(seconds: float) -> str:
    """3725 → '1 h 02 min', 95 → '1 min 35 s', 4.2 → '4.2 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
