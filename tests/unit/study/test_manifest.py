"""The manifest is rebuilt from job folders, the source of truth, also after the parent died (pure, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llem.io import atomic_write_json
from llem.study import manifest


def _job(index: int, status: str, config_hash: str = "h0", cycle: int = 0) -> dict:
    return {"index": index, "overrides": [f"n={index + 1}"], "config_hash": config_hash, "cycle": cycle,
            "status": status}


def _result(folder: Path, status: str, config_hash: str = "h0", cycle: int = 0) -> None:
    folder.mkdir(parents=True)
    atomic_write_json(folder / "result.json", {
        "status": status, "started_at": "2026-11-23T09:00:00Z", "finished_at": "2026-11-23T09:01:00Z",
        "error": None if status == "completed" else {"type": "RuntimeError", "message": "boom"},
        "identity": {"config_hash": config_hash, "cycle": cycle, "study_design_hash": "d" * 16}})


def test_rebuild_trusts_job_folders_over_a_stale_manifest(tmp_path: Path) -> None:
    jobs = [_job(0, "running"), _job(1, "running"), _job(2, "running"), _job(3, "completed"),
            _job(4, "skipped"), _job(5, "planned", config_hash="h5"), _job(6, "running"), _job(7, "running")]
    manifest.write(tmp_path, manifest.new("d" * 16, jobs))
    _result(tmp_path / "0", "completed")  # finished, but the parent died before it updated the manifest
    _result(tmp_path / "1", "running")  # killed mid-window: the folder still says running
    # 2: never got a folder, manifest says running -> interrupted; 3: manifest says completed, no folder
    _result(tmp_path / "5", "completed", config_hash="other")  # a folder from another plan
    _result(tmp_path / "6", "failed")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "result.json").write_text('{"status": "compl')  # torn by a crash mid-write

    got = {j["index"]: j for j in manifest.rebuild(tmp_path)["jobs"]}
    assert got[0]["status"] == "completed" and got[0]["finished_at"] == "2026-11-23T09:01:00Z"
    assert got[1]["status"] == "interrupted"
    assert got[2]["status"] == "interrupted"
    assert got[3]["status"] == "planned"  # nothing on disk proves it ran: resume runs it again
    assert got[4]["status"] == "skipped"
    assert got[5]["status"] == "planned"  # the other plan's result is not taken for this job
    assert got[6]["status"] == "failed" and got[6]["error"]["message"] == "boom"
    assert got[7]["status"] == "failed" and got[7]["error"]["type"] == "CorruptResult"


def test_set_status_is_atomic_and_refuses_unknown_states(tmp_path: Path) -> None:
    manifest.write(tmp_path, manifest.new("d" * 16, [_job(0, "planned")]))
    manifest.set_status(tmp_path, 0, "completed", job_dir=str(tmp_path / "0"))
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["jobs"][0]["status"] == "completed" and on_disk["jobs"][0]["job_dir"].endswith("/0")
    with pytest.raises(ValueError, match=r"status='done': allowed planned, skipped, running"):
        manifest.set_status(tmp_path, 0, "done")
    assert json.loads((tmp_path / "manifest.json").read_text())["jobs"][0]["status"] == "completed"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp files left behind
