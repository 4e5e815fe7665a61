"""llem's launcher under a sweeper that is not llem's (Optuna, basic) with `study.objective` set.

- the objectives are checked once, before any job (and against Optuna's `hydra.sweeper.direction`);
- each trial is run `study.n_cycles` times (cycle 0, 1, ... as `study_job.cycle`), each in its own
  process and folder, and the trial's objective is the MEAN over its cycles;
- a trial with a failed, crashed or objective-less cycle is one FAILED JobReturn (`ObjectiveMissing`):
  Optuna records a failed trial; `hydra.sweeper.max_failure_rate` decides whether the search goes on
  (llem/search/objective.py: why not NaN); a warning when it is Optuna's default 0;
- what the combination offers is printed once (SUPPORT, also in docs/search-tracking-api.md).

No Hydra import at module level (the launcher imports this lazily).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem.search.objective import Objective, ObjectiveMissing, hydra_value, mean_over_cycles, parse

# What each sweeper × launcher combination gives a measured study (docs/search-tracking-api.md).
SUPPORT = {
    ("llem", "llem"): "grid study: plan, cycles, order, gaps, fresh process per job, manifest, resume; "
                      "objective values recorded, not optimized",
    ("optuna", "llem"): "search: fresh process per trial, gaps, timeouts, manifest (entries added as trials "
                        "run), cycles per trial (objective = mean over cycles); no llem plan, no study.resume "
                        "(Optuna's own: hydra.sweeper.storage + study_name)",
    ("optuna", "basic"): "search inside this one process: no fresh process, no gaps, no timeouts, no manifest, "
                         "no cycles (one job per trial), no resume; fine to try a search space, not for figures "
                         "you compare",
    ("optuna", "joblib"): "search with hydra.sweeper.n_jobs trials at once in joblib workers: no fresh process "
                          "per job, no gaps, no manifest, no cycles, no resume; jobs share the machine: energy "
                          "figures are not comparable",
}


def sweeper_kind(config: Any) -> str:
    from omegaconf import OmegaConf

    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    return "llem" if "llem_sweeper" in target else "optuna" if "optuna" in target.lower() else \
        "basic" if target.endswith("BasicSweeper") else target.rsplit(".", 1)[-1] or "?"


def launcher_kind(config: Any) -> str:
    from omegaconf import OmegaConf

    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return "llem" if "llem_launcher" in target else "joblib" if "joblib" in target.lower() else \
        "basic" if target.endswith("BasicLauncher") else target.rsplit(".", 1)[-1] or "?"


def support_line(sweeper: str, launcher: str) -> str | None:
    text = SUPPORT.get((sweeper, launcher))
    return f"hydra/sweeper={sweeper} with hydra/launcher={launcher}: {text}" if text else None


def objective_note(spec: Any) -> str:
    """The plan's line on study.objective (llem's sweeper)."""
    objectives = parse(spec)
    what = ", ".join(f"{o.field} ({o.direction})" for o in objectives)
    return (f"study.objective: {what}: every job returns it to Hydra and records it (result.json `objective`, "
            "manifest); a job without it is a failed trial, not a failed study. llem's sweeper runs the grid "
            "as planned; to search, hydra/sweeper=optuna (docs/search-tracking-api.md). "
            + (support_line("llem", "llem") or ""))


def check_directions(config: Any, objectives: Sequence[Objective]) -> None:
    """Optuna's `hydra.sweeper.direction` must list one direction per objective, the same ones."""
    from omegaconf import OmegaConf

    from llem.errors import ConfigError
    raw = OmegaConf.select(config, "hydra.sweeper.direction")
    if raw is None:
        return
    given = [str(getattr(d, "name", d)).lower() for d in (raw if isinstance(raw, (list, tuple)) or
                                                          OmegaConf.is_list(raw) else [raw])]
    want = [o.direction for o in objectives]
    if given != want:
        raise ConfigError([("hydra.sweeper.direction", "[" + ",".join(given) + "]",
                            f"[{','.join(want)}]: one per study.objective item, in its order "
                            f"({', '.join(o.spec for o in objectives)})")])


MAX_FAILURE_NOTE = ("llem: hydra.sweeper.max_failure_rate=0.0 (Optuna's default): the first failed trial (a job "
                    "that failed, or whose objective is missing, e.g. energy not measured) stops the search; "
                    "hydra.sweeper.max_failure_rate=1.0 records failed trials and goes on")


@dataclass
class SearchRun:
    """One launch() of a foreign sweeper's trials on llem's app with study.objective set."""

    objectives: list[Objective]
    n_cycles: int
    m: int = 0  # trials in this launch

    @classmethod
    def of(cls, config: Any) -> SearchRun | None:
        from omegaconf import OmegaConf

        spec = OmegaConf.select(config, "study.objective")
        if spec is None or sweeper_kind(config) == "llem":
            return None
        objectives = parse(OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec)
        if sweeper_kind(config) == "optuna":
            check_directions(config, objectives)
            rate = OmegaConf.select(config, "hydra.sweeper.max_failure_rate")
            if rate is not None and float(rate) == 0.0:
                print(MAX_FAILURE_NOTE, file=sys.stderr, flush=True)
        return cls(objectives, max(1, int(OmegaConf.select(config, "study.n_cycles") or 1)))

    def expand(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list[list[str]], int]:
        """Every trial once per cycle (cycle-major: all trials' cycle 0 first); job numbers stay unique
        across launches (trial t's cycles are jobs t*n_cycles ... t*n_cycles+n_cycles-1)."""
        self.m = len(job_overrides)
        if self.n_cycles == 1:
            return [list(o) for o in job_overrides], initial_job_idx
        out = [list(o) + [f"study_job.cycle={c}"] for c in range(self.n_cycles) for o in job_overrides]
        return out, initial_job_idx * self.n_cycles

    def values_of(self, ret: Any) -> tuple[list[float | None], str | None]:
        """A job's objective values (None where missing) and why it has none."""
        from hydra.core.utils import JobStatus

        if ret.status != JobStatus.COMPLETED:
            exc = ret._return_value
            return [None] * len(self.objectives), f"{type(exc).__name__}: {exc}"
        value = ret._return_value
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        out: list[float | None] = []
        for v in values[:len(self.objectives)]:
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            out.append(f if math.isfinite(f) else None)
        out += [None] * (len(self.objectives) - len(out))
        return out, None if all(v is not None for v in out) else f"not a number: {value!r}"

    def collapse(self, returns: Sequence[Any]) -> list[Any]:
        """One JobReturn per trial (its first cycle's): COMPLETED with the mean over the trial's cycles,
        or FAILED with ObjectiveMissing when a cycle has no value."""
        from hydra.core.utils import JobStatus

        out = []
        for t in range(self.m):
            group = [returns[c * self.m + t] for c in range(self.n_cycles)]
            seen = [self.values_of(r) for r in group]
            mean = mean_over_cycles([v for v, _ in seen])
            ret = group[0]
            why = next((w for _, w in seen if w), None)
            if why is not None or any(v is None for v in mean):
                which = f" (cycle {next(c for c, (_, w) in enumerate(seen) if w)} of {self.n_cycles})" \
                    if self.n_cycles > 1 and why else ""
                ret.status, ret._return_value = JobStatus.FAILED, ObjectiveMissing(
                    f"trial failed{which}: {why}" if why else "trial failed: objective missing")
            else:
                ret.status, ret._return_value = JobStatus.COMPLETED, hydra_value(mean)
                if self.n_cycles > 1:
                    print(f"llem: trial {' '.join(ret.overrides or [])}: objective = mean over {self.n_cycles} "
                          f"cycles = {ret._return_value}", file=sys.stderr, flush=True)
            out.append(ret)
        return out


def next_free_index(sweep_dir: str | Path) -> int:
    """The first job number after every job the folder already holds (manifest entries, numbered job
    folders): a second search in the same folder (continuing an Optuna study from its storage) adds its
    jobs after the earlier ones instead of overwriting them (Optuna's sweeper numbers jobs from 0 each run)."""
    from llem.study import manifest

    used = {int(j["index"]) for j in (manifest.load(sweep_dir) or {}).get("jobs", []) if isinstance(j.get("index"), int)}
    root = Path(sweep_dir)
    if root.is_dir():
        used |= {int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    return max(used) + 1 if used else 0


def record_objectives(sweep_dir: str | Path) -> None:
    """Copy each job's `objective` block from its result.json into its manifest entry."""
    from llem.io import read_json_object
    from llem.study import manifest

    m = manifest.load(sweep_dir)
    if not m:
        return
    changed = False
    for entry in m.get("jobs", []):
        job_dir = Path(entry.get("job_dir") or Path(sweep_dir) / str(entry.get("index")))
        try:
            result = read_json_object(job_dir / "result.json")
        except Exception:
            continue
        objective = result.get("objective") if isinstance(result, dict) else None
        if objective and entry.get("objective") != objective:
            entry["objective"] = objective
            changed = True
    if changed:
        manifest.write(sweep_dir, m)
