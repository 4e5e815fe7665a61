"""Restore records: what llem changed on which GPU, written (atomically) before it changes anything.

One JSON file per application under `<state folder>/gpu-settings/` (the state folder: $LLEM_STATE_DIR,
else $XDG_STATE_HOME/llem, else ~/.local/state/llem): host, the applying process (pid and its start time,
so a reused pid is not mistaken for it), and per GPU its UUID, index, name, previous values and what was
changed. The record is deleted once the GPUs are put back; a record whose process is gone is stale: the
next llem run on the host restores it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from llem.io import atomic_write_json, read_json
from llem.result import now_iso

STATE_ENV = "LLEM_STATE_DIR"
FOLDER = "gpu-settings"


def state_dir() -> Path:
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llem"


def records_dir() -> Path:
    return state_dir() / FOLDER


def process_start(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(record: dict[str, Any]) -> bool:
    """The process that applied the settings still runs (same pid, same start time)."""
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    started = process_start(pid)
    if started is None:
        return False
    recorded = record.get("pid_start")
    return recorded is None or abs(started - float(recorded)) < 1.0


def new_record(gpus: list[dict[str, Any]], owner: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"kind": "llem-gpu-settings", "host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid),
            "created_at": now_iso(), "owner": owner, "gpus": gpus}


def write(record: dict[str, Any]) -> Path:
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['host']}-{record['pid']}-{os.urandom(4).hex()}.json"
    atomic_write_json(path, record)
    return path


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def on_this_host() -> list[tuple[Path, dict[str, Any]]]:
    """Every readable record of this host, oldest first (a torn one is skipped: it was never applied)."""
    folder = records_dir()
    if not folder.is_dir():
        return []
    host = socket.gethostname()
    out = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            rec = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("kind") == "llem-gpu-settings" and rec.get("host") == host:
            out.append((path, rec))
    return out
