"""What became of a job process, and making its result.json say so (the job folder is the truth).

`classify` is pure: exit status + what the launcher did (timeout, interrupt) + the job's own
result.json → final status and error. `finalize_result` rewrites result.json atomically when the job
could not (killed, crashed, timed out) and leaves a result the job finished itself alone.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llem import __version__
from llem.io import TornFile, atomic_write_json, free_space_text, read_json_object, set_aside
from llem.launch.process import describe_exit
from llem.result import RESULT_FILE, Result, now_iso

EXIT_INTERRUPTED = 130

SIGNAL_HINTS = {
    "SIGKILL": "killed by SIGKILL from outside llem: often the kernel's out-of-memory killer (see dmesg)",
    "SIGSEGV": "segmentation fault (native code: a CUDA/driver/kernel library crash)",
    "SIGABRT": "aborted (a native library called abort(), e.g. a failed CUDA assertion)",
    "SIGBUS": "bus error (native code)",
    "SIGTERM": "terminated by SIGTERM from outside llem",
}


@dataclass
class Outcome:
    status: str  # completed | failed | interrupted
    reason: Optional[str]  # None | exception | cuda_error | crash | signal | timeout | interrupted | no_result
    error: Optional[dict[str, Any]]
    exit_code: Optional[int]
    exit_signal: Optional[str]
    rewrite: bool  # result.json must be (re)written by the launcher


def read_result(job_dir: Path) -> Optional[dict[str, Any]]:
    """The job's result.json; None when there is none or it is torn (empty, truncated, not an
    object, not UTF-8): the job did not finish it."""
    try:
        return read_json_object(job_dir / RESULT_FILE)
    except (OSError, TornFile):
        return None


LOW_SPACE_BYTES = 1 << 20  # a job folder's filesystem with less free space than this is full


def storage_problem(job_dir: Path, error: Optional[dict[str, Any]], texts: tuple[str, ...] = ()) -> Optional[str]:
    """`disk_full` / `io_error` when a job that did not complete failed on its storage: it raised
    llem's StorageError, or its folder's filesystem is full or read-only now and the job either left
    no result or failed with ENOSPC/EROFS/EIO (an error elsewhere, e.g. a full /dev/shm, is not it)."""
    from llem.io import storage_reason_in

    error = error or {}
    if error.get("reason") in ("disk_full", "io_error"):
        return str(error["reason"])
    text = " ".join([str(error.get("message", "")), *texts])
    if error.get("type") == "StorageError" or any("StorageError" in t for t in texts):
        return storage_reason_in(text) or "io_error"
    if error.get("reason") not in ("crash", "no_result", "signal") and not storage_reason_in(text):
        return None
    return _filesystem_problem(job_dir)


def _filesystem_problem(job_dir: Path) -> Optional[str]:
    probe = job_dir if job_dir.exists() else job_dir.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "io_error"
    if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
        return "disk_full"
    if os.geteuid() != 0 and not os.access(probe, os.W_OK):
        return "io_error"
    return None


def storage_outcome(outcome: Outcome, reason: str, job_dir: Path) -> Outcome:
    """The job's outcome rewritten as a storage failure (one line saying where and what to do)."""
    what = ("the disk is full" if reason == "disk_full" else "its folder cannot be written")
    fix = ("free some space" if reason == "disk_full" else "make the folder writable")
    err = dict(outcome.error or {})
    err.update({"type": "DiskFull" if reason == "disk_full" else "StorageError", "reason": reason,
                "message": f"{what}: {job_dir} ({free_space_text(job_dir)}); {fix}, then run the same "
                           "command with study.resume=true", "cause": (outcome.error or {}).get("message")})
    return Outcome("failed", reason, err, outcome.exit_code, outcome.exit_signal, rewrite=True)


def _exit_text(exit_code: Optional[int], exit_signal: Optional[str]) -> str:
    return f"signal {exit_signal}" if exit_signal else f"exit code {exit_code}"


def classify(returncode: Optional[int], result: Optional[dict[str, Any]], *, timed_out: bool = False,
             interrupted: bool = False, timeout_s: Optional[float] = None, grace_s: float = 0.0,
             fault_text: str = "", interrupt_signal: str = "SIGINT") -> Outcome:
    exit_code, exit_signal = describe_exit(returncode)
    own = result.get("status") if result else None
    own_error = (result or {}).get("error") or {}
    child_tb = own_error.get("traceback") or fault_text or None
    where = {"exit_code": exit_code, "exit_signal": exit_signal}
    if own == "completed":  # the measurement finished and was written; a crash in teardown is noted
        return Outcome("completed", None, None, exit_code, exit_signal,
                       rewrite=bool(returncode) and not timed_out and not interrupted)
    if timed_out:
        err = {"type": "Timeout", "reason": "timeout", "traceback": child_tb, **where,
               "message": f"job ran past hydra.launcher.timeout_s={timeout_s:g} s and was stopped (SIGTERM to its "
                          f"process tree, SIGKILL after hydra.launcher.kill_grace_s={grace_s:g} s if still alive)"}
        return Outcome("failed", "timeout", err, exit_code, exit_signal, rewrite=True)
    if interrupted:
        err = {"type": "Interrupted", "reason": "interrupted", "traceback": child_tb, **where,
               "message": f"study interrupted ({interrupt_signal}) while this job ran; the job was stopped"}
        return Outcome("interrupted", "interrupted", err, exit_code, exit_signal, rewrite=True)
    if own == "failed":
        message = str(own_error.get("message", ""))
        reason = "cuda_error" if "CUDA" in message or "cuda" in str(own_error.get("type", "")).lower() else "exception"
        err = {**own_error, "reason": reason, **where}
        return Outcome("failed", reason, err, exit_code, exit_signal, rewrite=own_error != err)
    if own == "interrupted":  # stopped from outside (e.g. the launcher died, SIGTERM)
        return Outcome("interrupted", "interrupted", {**own_error, "reason": "interrupted", **where},
                       exit_code, exit_signal, rewrite=True)
    # The job did not finish its result.json: it died (signal, os._exit) or never started.
    if exit_signal:
        reason = "signal"
        message = f"job process died from {exit_signal}: {SIGNAL_HINTS.get(exit_signal, 'fatal signal')}"
        kind = "Crash"
    elif returncode == 0:
        reason, kind = "no_result", "NoResult"
        message = "job process exited 0 without finishing result.json"
    else:
        reason, kind = "crash", "Crash"
        message = f"job process exited with code {exit_code} before finishing result.json (e.g. os._exit)"
    err = {"type": kind, "message": message, "reason": reason, "traceback": fault_text or None, **where}
    return Outcome("failed", reason, err, exit_code, exit_signal, rewrite=True)


def finalize_result(job_dir: Path, outcome: Outcome, result: Optional[dict[str, Any]],
                    identity: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Atomically write the final result.json when the job could not; returns what was written."""
    if not outcome.rewrite:
        return None
    if result is None and (job_dir / RESULT_FILE).exists() and read_result(job_dir) is None:
        set_aside(job_dir / RESULT_FILE, _dt.datetime.now().strftime("%Y%m%dT%H%M%S"))  # torn: kept, not lost
    data = result if result is not None else Result(llem_version=__version__, identity=dict(identity)).as_dict()
    if outcome.status != "completed":
        data["status"] = outcome.status
        data["error"] = outcome.error
        data["finished_at"] = now_iso()
    else:
        data.setdefault("warnings", []).append(
            f"job process ended with {_exit_text(outcome.exit_code, outcome.exit_signal)} after writing its result")
    data.setdefault("identity", {}).setdefault("job_dir", str(job_dir))
    atomic_write_json(job_dir / RESULT_FILE, data)
    return data


class JobFailed(RuntimeError):
    """A job that did not complete, as a picklable exception for Hydra's JobReturn.return_value."""
