"""Resuming a study in its sweep folder (pure): same design or refuse, skip what already completed.

Job folders are the source of truth: a job counts as done when a folder's result.json says
completed for the same (config_hash, cycle) and study design hash, whatever the manifest says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llem.study.plan import StudyError


def check_design(saved_hash: str | None, new_hash: str, sweep_dir: str) -> None:
    """Refuse to mix two study designs in one folder: their results would not be comparable."""
    if saved_hash is not None and saved_hash != new_hash:
        raise StudyError(
            f"cannot resume {sweep_dir}: it holds study design {saved_hash}, but this command plans "
            f"design {new_hash} (a swept value, group choice or config file value differs). Run the "
            "same sweep to resume, or choose a new hydra.sweep.dir for the new design")


def check_fresh_folder(has_manifest: bool, resume: bool, sweep_dir: str) -> None:
    """A folder where a study already started is only reused on purpose (study.resume=true): one
    with a manifest (readable or torn), or with job results (also without a manifest)."""
    if resume:
        return
    found = "manifest.json" if has_manifest else study_traces(sweep_dir)
    if found:
        raise StudyError(f"{sweep_dir} already holds a study ({found}); pass study.resume=true to "
                         "continue it, or choose another hydra.sweep.dir")


def study_traces(sweep_dir: str) -> str | None:
    """What shows that a study ran in the folder: a manifest (even torn) or a job folder's result."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return None
    names = [p.name for p in root.iterdir()]
    if any(n == "manifest.json" or n.startswith("manifest.json.torn-") for n in names):
        return "manifest.json"
    results = sorted((p for p in root.iterdir() if p.is_dir() and any(
        (p / n).exists() for n in ("result.json",))), key=lambda p: p.name)
    if results:
        return f"results without a manifest: {results[0].name}/result.json" + (
            f" and {len(results) - 1} more" if len(results) > 1 else "")
    return None


def saved_design(saved_plan: Mapping[str, Any] | None, saved_manifest: Mapping[str, Any] | None,
                 job_states: Iterable[Mapping[str, Any]]) -> str | None:
    """The design hash a folder already holds: its plan's, else its manifest's, else its job folders'."""
    for source in (saved_plan, saved_manifest):
        if isinstance(source, Mapping) and source.get("study_design_hash"):
            return str(source["study_design_hash"])
    return next((str(s["study_design_hash"]) for s in job_states if s.get("study_design_hash")), None)


def previous_indices(saved_plan: Mapping[str, Any] | None, saved_manifest: Mapping[str, Any] | None = None,
                     job_states: Iterable[Mapping[str, Any]] = ()) -> dict[tuple[str, int], int]:
    """(config_hash, cycle) → job index already used in the folder: from its plan, else its manifest,
    plus job folders named by their index, so a resumed job never lands in another job's folder."""
    out: dict[tuple[str, int], int] = {}
    plan = saved_plan if isinstance(saved_plan, Mapping) else None
    source = plan if plan and plan.get("jobs") else saved_manifest if isinstance(saved_manifest, Mapping) else None
    jobs = (source or {}).get("jobs")
    for j in jobs if isinstance(jobs, list) else []:
        if not isinstance(j, Mapping) or not isinstance(j.get("index"), int) or j.get("config_hash") is None:
            continue  # a damaged entry: the job folders below still say which index is taken
        cycle = j.get("cycle")
        out[(str(j["config_hash"]), cycle if isinstance(cycle, int) else 0)] = j["index"]
    for s in job_states:
        name = Path(str(s.get("job_dir", ""))).name
        if name.isdigit() and s.get("config_hash") is not None and s.get("cycle") is not None:
            out.setdefault((str(s["config_hash"]), int(s["cycle"])), int(name))
    return out


def completed_keys(job_states: Iterable[Mapping[str, Any]], study_design_hash: str) -> set[tuple[str, int]]:
    """(config_hash, cycle) of the job folders that completed under this design."""
    done = set()
    for s in job_states:
        if s.get("status") != "completed" or s.get("config_hash") is None or s.get("cycle") is None:
            continue
        if s.get("study_design_hash") not in (None, study_design_hash):
            continue
        done.add((str(s["config_hash"]), int(s["cycle"])))
    return done


def contiguous_blocks(indices: Sequence[int]) -> list[list[int]]:
    """[0,1,2,5,6,9] → [[0,1,2],[5,6],[9]]: launched with initial_job_idx = block[0], so Hydra's job
    number (and the default job folder `${hydra.job.num}`) equals the plan's job index."""
    blocks: list[list[int]] = []
    for i in indices:
        if blocks and i == blocks[-1][-1] + 1:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks
