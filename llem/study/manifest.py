"""`manifest.json` at the sweep folder root: one entry per planned job, rewritten atomically.

Job folders are the source of truth (their result.json); `rebuild` recovers the manifest from them,
also after the parent died. Only the parent process writes the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llem.io import atomic_write_json, read_json
from llem.result import RESULT_FILE, now_iso

MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.json"
STATUSES = ("planned", "skipped", "running", "completed", "failed", "interrupted")
MANIFEST_VERSION = 1


def load(sweep_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(sweep_dir) / MANIFEST_FILE
    return read_json(path) if path.is_file() else None


def write(sweep_dir: str | Path, manifest: dict[str, Any]) -> None:
    manifest["updated_at"] = now_iso()
    atomic_write_json(Path(sweep_dir) / MANIFEST_FILE, manifest)


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
    """What a job folder says of itself: status, error, timestamps, identity (None if no result)."""
    path = job_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = read_json(path)
    except (OSError, json.JSONDecodeError):
        return {"status": "failed", "error": {"type": "CorruptResult", "message": f"unreadable {path}"}}
    status = result.get("status", "failed")
    if status == "running":
        status = "interrupted"  # a folder still saying running has no live job behind it (rebuild)
    ident = result.get("identity", {})
    return {"status": status, "error": result.get("error"), "started_at": result.get("started_at"),
            "finished_at": result.get("finished_at"), "config_hash": ident.get("config_hash"),
            "cycle": ident.get("cycle"), "study_design_hash": ident.get("study_design_hash")}


def rebuild(sweep_dir: str | Path, manifest: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Refresh every non-skipped entry from its job folder (`job_dir`, else `<sweep_dir>/<index>`)."""
    sweep_dir = Path(sweep_dir)
    manifest = manifest or load(sweep_dir)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {sweep_dir}")
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
        job.update({k: v for k, v in seen.items() if k in ("status", "error", "started_at", "finished_at")})
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
