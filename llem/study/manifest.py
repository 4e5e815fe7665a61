"""`manifest.json` at the sweep folder root: one entry per planned job, rewritten atomically.

Job folders are the source of truth (their result.json); `rebuild` recovers the manifest from them,
also after the parent died. Only the parent process writes the manifest.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Optional

from llem.io import StorageError, StorageExit, TornFile, atomic_write_json, read_json_object, set_aside
from llem.result import now_iso
from llem.study import jobfiles

MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.json"
STATUSES = ("planned", "skipped", "running", "completed", "failed", "interrupted")
MANIFEST_VERSION = 1


STORAGE_REASONS = ("disk_full", "io_error")


def _valid(manifest: Any) -> bool:
    return isinstance(manifest, dict) and isinstance(manifest.get("jobs"), list) and all(
        isinstance(j, dict) and isinstance(j.get("index"), int) for j in manifest["jobs"])


def read(sweep_dir: str | Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(manifest, None), (None, None) when there is none, or (None, why) when it is torn."""
    path = Path(sweep_dir) / MANIFEST_FILE
    try:
        data = read_json_object(path)
    except TornFile as e:
        return None, e.why
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    if data is not None and not _valid(data):
        return None, "not a manifest (no list of jobs with an index each)"
    return data, None


def load(sweep_dir: str | Path) -> Optional[dict[str, Any]]:
    """The manifest, or None when there is none or it is torn (it can always be rebuilt)."""
    return read(sweep_dir)[0]


def read_plan(sweep_dir: str | Path) -> Optional[dict[str, Any]]:
    """plan.json, or None when there is none or it is torn (a plan is always made again)."""
    try:
        data = read_json_object(Path(sweep_dir) / PLAN_FILE)
    except (TornFile, OSError):
        return None
    return data if data is not None and isinstance(data.get("jobs", []), list) else None


def write(sweep_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically; a torn one is first set aside (`manifest.json.torn-<time>`).
    A study stopped by its storage (disk full, read-only) stays `failed` with that reason."""
    path = Path(sweep_dir) / MANIFEST_FILE
    if path.exists() and read(sweep_dir)[1] is not None:
        set_aside(path, _dt.datetime.now().strftime("%Y%m%dT%H%M%S"))
    if (manifest.get("stopped_by") or {}).get("reason") in STORAGE_REASONS and manifest.get("status") in (
            "running", "interrupted"):
        manifest["status"] = "failed"
    manifest["updated_at"] = now_iso()
    try:
        atomic_write_json(path, manifest)
    except StorageError as e:  # only the study's own process writes the manifest: stop it, one line
        print(f"llem: {e}", file=sys.stderr, flush=True)
        raise StorageExit(str(e), e.reason) from None


def new(study_design_hash: str, jobs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """jobs: dicts with at least index, overrides, config_hash, cycle, status (planned|skipped)."""
    return {"manifest_version": MANIFEST_VERSION, "study_design_hash": study_design_hash,
            "status": "planned", "created_at": now_iso(), **fields,
            "jobs": [dict(job) for job in jobs]}


def _entry(manifest: dict[str, Any], index: int) -> dict[str, Any]:
    for job in manifest["jobs"]:
        if job.get("index") == index:
            return job
    raise KeyError(f"job {index} is not in the manifest")


def set_status(sweep_dir: str | Path, index: int, status: str, **fields: Any) -> dict[str, Any]:
    """Read-modify-write one job's entry (atomic). Returns the updated manifest."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r}: allowed {', '.join(STATUSES)}")
    manifest = load(sweep_dir)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {sweep_dir}")
    entry = _entry(manifest, index)
    entry["status"] = status
    entry.update(fields)
    write(sweep_dir, manifest)
    return manifest


def set_study_status(sweep_dir: str | Path, status: str, **fields: Any) -> None:
    manifest = load(sweep_dir)
    if manifest is not None:
        manifest["status"] = status
        manifest.update(fields)
        write(sweep_dir, manifest)


def job_status(job_dir: Path) -> Optional[dict[str, Any]]:
    """What a job folder says of itself: status, error, timestamps, identity (None if no result).

    A torn result.json (or a torn requests.jsonl / timeseries.parquet beside it) is `failed` with
    error type CorruptResult and `torn` naming the files: the job did not complete. Its identity
    then comes from the job's .hydra/overrides.yaml.
    """
    files = jobfiles.check(job_dir)
    if not files.has_result:
        return None
    result = files.result or {}
    ident = result.get("identity") if isinstance(result.get("identity"), dict) else {}
    if not ident.get("config_hash"):
        ident = {**jobfiles.identity_from_overrides(job_dir), **{k: v for k, v in ident.items() if v is not None}}
    if files.torn:
        what = "; ".join(f"{name}: {why}" for name, why in files.torn.items())
        status, error = "failed", {"type": "CorruptResult", "reason": "torn", "message": f"torn file(s) in {job_dir}: {what}"}
    else:
        status = result.get("status") if result.get("status") in STATUSES else "failed"
        error = result.get("error")
    if status == "running":
        status = "interrupted"  # a folder still saying running has no live job behind it (rebuild)
    cycle = ident.get("cycle")
    return {"status": status, "error": error, "started_at": result.get("started_at"),
            "finished_at": result.get("finished_at"), "config_hash": ident.get("config_hash"),
            "cycle": cycle if isinstance(cycle, int) else None, "study_design_hash": ident.get("study_design_hash"),
            **({"torn": dict(files.torn)} if files.torn else {})}


def _from_plan_or_folders(sweep_dir: Path) -> dict[str, Any]:
    """A manifest to rebuild into when manifest.json is missing or torn: the plan's jobs, else one
    entry per job folder named by its index."""
    plan = read_plan(sweep_dir)
    if plan and plan.get("jobs"):
        jobs = [{"index": j["index"], "config": j.get("config"), "cycle": j.get("cycle"),
                 "config_hash": j.get("config_hash"), "overrides": j.get("overrides"),
                 "status": "skipped" if j.get("status") == "skipped" else "planned",
                 **({"reason": j["reason"]} if j.get("reason") else {})}
                for j in plan["jobs"] if isinstance(j, dict) and isinstance(j.get("index"), int)]
        return new(plan.get("study_design_hash"), jobs, sweep_dir=str(sweep_dir), status="running",
                   rebuilt_from="plan.json")
    jobs, states = [], scan_job_dirs(sweep_dir)
    for state in states:
        name = Path(state["job_dir"]).name
        if name.isdigit():
            jobs.append({"index": int(name), "config_hash": state.get("config_hash"), "cycle": state.get("cycle"),
                         "status": "planned", "job_dir": state["job_dir"]})
    designs = {s.get("study_design_hash") for s in states} - {None}
    return new(designs.pop() if len(designs) == 1 else None, jobs, sweep_dir=str(sweep_dir), status="running",
               rebuilt_from="job folders")


def rebuild(sweep_dir: str | Path, manifest: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Refresh every non-skipped entry from its job folder (`job_dir`, else `<sweep_dir>/<index>`).
    Without a readable manifest.json, the entries come from plan.json, else from the job folders."""
    sweep_dir = Path(sweep_dir)
    manifest = manifest or load(sweep_dir) or _from_plan_or_folders(sweep_dir)
    for job in manifest["jobs"]:
        if job.get("status") == "skipped":
            continue
        job_dir = Path(job.get("job_dir") or sweep_dir / str(job["index"]))
        seen = job_status(job_dir)
        if seen is None:
            if job.get("status") in ("running", "completed"):
                job["status"] = "interrupted" if job["status"] == "running" else "planned"
            continue
        if seen.get("config_hash") not in (None, job.get("config_hash")) or seen.get("cycle") not in (
                None, job.get("cycle")):
            continue  # a folder from another plan: not this job's result
        if seen["status"] == "interrupted" and (job.get("error") or {}).get("reason") in STORAGE_REASONS:
            continue  # the launcher could not write the job's folder (read-only): the manifest knows more
        job.update({k: v for k, v in seen.items() if k in ("status", "error", "started_at", "finished_at")})
        if seen.get("torn"):
            job["torn"] = seen["torn"]
        else:
            job.pop("torn", None)
        job["job_dir"] = str(job_dir)
    return manifest


def scan_job_dirs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """What every job folder directly under the sweep folder says of itself (job_status + job_dir).

    Used by resume: whatever the manifest says, a (config_hash, cycle) whose folder says completed
    is not run again.
    """
    found = []
    root = Path(sweep_dir)
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if child.is_dir():
            seen = job_status(child)
            if seen is not None:
                found.append({**seen, "job_dir": str(child)})
    return found


def ensure_jobs(sweep_dir: str | Path, jobs: list[dict[str, Any]],
                fields: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Create the manifest when missing and add (or update) entries by index (atomic).

    For launchers used without llem's sweeper (e.g. Hydra's BasicSweeper): they still get a manifest.
    `fields` are set on a manifest created here.
    """
    found = load(sweep_dir)
    extra = dict(fields or {})
    manifest = found if found is not None else new(extra.pop("study_design_hash", None), [], **extra)
    by_index = {job.get("index"): job for job in manifest["jobs"]}
    for job in jobs:
        if job["index"] in by_index:
            by_index[job["index"]].update(job)
        else:
            manifest["jobs"].append(dict(job))
    manifest["jobs"].sort(key=lambda job: job["index"])
    write(sweep_dir, manifest)
    return manifest
