"""The search section of a report: the Pareto front of `study.objective` over the trials of a study
(an Optuna search, or any study whose jobs recorded objective values), with the best trials named.

A trial is a config (config_hash); its value per objective is the mean over its completed jobs (cycles,
or Optuna sampling the same point twice). A trial with a missing figure (energy not measured, failed)
is listed as failed and left out of the front. Trial A dominates B when A is at least as good in every
objective and better in one (minimize: lower; maximize: higher). Optuna's own answer
(`optimization_results.yaml`, written by hydra-optuna-sweeper) is shown beside it when present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

OPTUNA_FILE = "optimization_results.yaml"


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)]


def trials(jobs: pd.DataFrame) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(fields, directions, one dict per config: label, jobs, values (None = missing))."""
    from llem.results import config_label, varying_overrides
    from llem.search.objective import mean_over_cycles

    fields: list[str] = []
    directions: list[str] = []
    by_config: dict[str, dict[str, Any]] = {}
    varying = varying_overrides(jobs) if len(jobs) else []
    for _, row in jobs.iterrows():
        try:
            result = json.loads((Path(str(row["job_dir"])) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        objective = result.get("objective") if isinstance(result, dict) else None  # a torn file: no objective
        if not isinstance(objective, dict) or not objective.get("fields"):
            if isinstance(result, dict) and not by_config and "study" in (result.get("config") or {}) and \
                    not (result["config"]["study"] or {}).get("objective"):
                break  # a study without study.objective (the first readable job says so): nothing to read
            continue
        fields, directions = list(objective["fields"]), list(objective["directions"])
        key = str(row.get("config_hash") or row["job_dir"])
        trial = by_config.setdefault(key, {"label": config_label(row, varying) or "(defaults)", "jobs": [],
                                           "per_job": [], "missing": set()})
        index = row.get("job_index")
        trial["jobs"].append(str(index) if isinstance(index, int) and not isinstance(index, bool)
                             else Path(str(row["job_dir"])).name)
        trial["per_job"].append(objective.get("values") or [None] * len(fields))
        trial["missing"].update((objective.get("missing") or {}).values())
    out = []
    for trial in by_config.values():
        trial["values"] = mean_over_cycles(trial["per_job"])
        out.append(trial)
    return fields, directions, out


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def search_section(folder: str | Path, jobs: pd.DataFrame) -> str:
    """Markdown for the report page ("" when no job recorded an objective)."""
    fields, directions, found = trials(jobs)
    if not fields:
        return ""
    ok = [t for t in found if all(v is not None for v in t["values"])]
    front = set(pareto_front([t["values"] for t in ok], directions))
    lines = ["", "## Search: Pareto front of the objectives", "",
             "Objectives: " + ", ".join(f"`{f}` ({d})" for f, d in zip(fields, directions))
             + f". {len(found)} trials (configs), {len(found) - len(ok)} failed (objective missing); "
               "a trial's value is the mean over its jobs (cycles).", ""]
    for k, (f, d) in enumerate(zip(fields, directions)):
        if ok:
            best = (max if d == "maximize" else min)(ok, key=lambda t: t["values"][k])
            lines.append(f"- best `{f}`: **{best['label']}** = {_fmt(best['values'][k])} (job {', '.join(best['jobs'])})")
    lines.append("")
    header = ["trial", "jobs", *fields, "Pareto front"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ranked = sorted(found, key=lambda t: (t not in ok or ok.index(t) not in front, t["label"]))
    for t in ranked:
        on = t in ok and ok.index(t) in front
        mark = "**yes**" if on else ("failed: " + "; ".join(sorted(t["missing"]))[:120] if t not in ok else "")
        lines.append("| " + " | ".join([t["label"].replace("|", "\\|"), ", ".join(t["jobs"]),
                                        *[_fmt(v) for v in t["values"]], mark]) + " |")
    optuna = Path(folder) / OPTUNA_FILE
    if optuna.is_file():
        lines += ["", f"Optuna's own answer ([{OPTUNA_FILE}]({OPTUNA_FILE})):", "", "```",
                  optuna.read_text(encoding="utf-8").strip(), "```"]
    return "\n".join(lines) + "\n"
