"""The processes a vLLM engine starts (engine core, workers): found after the start, killed at close."""

from __future__ import annotations

import contextlib
from typing import Any


def descendants() -> dict[int, Any]:
    import psutil

    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def resource_tracker_pid() -> int | None:
    """multiprocessing's resource tracker: shared by the whole process, exits with it; not ours to kill."""
    with contextlib.suppress(Exception):
        from multiprocessing import resource_tracker

        return resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
    return None


def started_since(before: set[int]) -> dict[int, Any]:
    """Descendants of this process that were not there before (multiprocessing's tracker excluded)."""
    tracker = resource_tracker_pid()
    return {pid: p for pid, p in descendants().items() if pid not in before and pid != tracker}


def kill_all(started: dict[int, Any], timeout_s: float = 5.0) -> None:
    """Kill each started process that is still alive, with its children, and reap them."""
    import psutil

    procs = [p for p in started.values() if p.is_running()]  # zombies too: reaped below
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for child in p.children(recursive=True):
                child.kill()
            p.kill()
    psutil.wait_procs(procs, timeout=timeout_s)
