"""Which processes belong to a job: the process and all its descendants (vLLM's engine core and
workers are children of the job process). One helper for the meter, the launcher's health check and
the backends, so they agree on what "ours" means."""

from __future__ import annotations

import os


def process_tree(pid: int | None = None) -> set[int]:
    """`pid` (default: this process) and every descendant; psutil when installed, else /proc."""
    pid = os.getpid() if pid is None else pid
    try:
        import psutil

        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except Exception:  # psutil missing, or the process is gone: /proc below, else just pid
        pass
    pids, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            todo.extend(k for k in kids if k not in pids)
            pids.update(kids)
    return pids
