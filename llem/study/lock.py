"""One running study per sweep folder: an OS lock (`flock`) on `<sweep_dir>/.llem.lock`.

The study's process takes the lock before it writes anything in the folder (plan, manifest) and
holds it until it ends; the kernel drops it when the process dies, so a `kill -9` leaves no stale
lock. A second launch, or a `study.resume=true` while the study still runs, is refused at once
(exit 2) naming the PID and command that hold the folder (the lock file holds them).

Job processes do not hold that lock (its descriptor is close-on-exec and closed in forked
children), but each takes a shared lock on `<sweep_dir>/.llem.jobs.lock` for its life: a study that
takes the folder waits (bounded) until no job of an earlier, killed study is still writing there,
so a job is never measured twice at once. The lock file also keeps `RESERVE_BYTES` allocated: on
ENOSPC the space goes back (llem.io.on_disk_full) so the failure itself can still be recorded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from llem import io
from llem.result import now_iso
from llem.study.plan import StudyError

LOCK_FILE = ".llem.lock"
JOBS_LOCK_FILE = ".llem.jobs.lock"
JOBS_LOCK_ENV = "LLEM_STUDY_JOBS_LOCK"  # set by the launcher: the job processes' shared lock
RESERVE_BYTES = 4 * 2**20  # kept allocated in the lock file; given back when the disk fills up
ORPHAN_WAIT_S = 30.0  # how long a new study waits for jobs of a killed study to finish dying


class FolderInUse(StudyError):
    """Another running study (or a job of a killed one, still exiting) holds the sweep folder."""


class StudyLock:
    """The exclusive lock of one sweep folder, held by this process (reentrant: `depth`)."""

    def __init__(self, sweep_dir: Path, fd: int) -> None:
        self.sweep_dir = sweep_dir
        self.fd = fd
        self.pid = os.getpid()
        self.depth = 1
        self.header = b""

    def release_reserve(self) -> bool:
        """Give the reserved bytes back to the filesystem (disk full); True if there were any."""
        if self.fd < 0 or os.getpid() != self.pid:
            return False
        try:
            size = os.fstat(self.fd).st_size
            os.ftruncate(self.fd, len(self.header))
        except OSError:
            return False
        return size > len(self.header)


_held: dict[str, StudyLock] = {}
_mutex = threading.Lock()


def _key(sweep_dir: str | os.PathLike[str]) -> str:
    return os.path.realpath(sweep_dir)


def _forget_after_fork() -> None:
    """In a forked child: these locks are the parent's. Close our copies of the descriptors (that
    never unlocks: the parent's open file description stays locked) and never unlock them."""
    for lock in _held.values():
        with contextlib.suppress(OSError):
            os.close(lock.fd)
        lock.fd = -1
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def held(sweep_dir: str | os.PathLike[str]) -> bool:
    """Whether this process owns the folder."""
    return _key(sweep_dir) in _held


def holder(sweep_dir: str | os.PathLike[str]) -> str:
    """Who holds the folder, from the lock file ('pid 123 (python -m llem -m ...)' ...)."""
    path = Path(sweep_dir) / LOCK_FILE
    text = ""
    for _ in range(20):  # the holder writes its header right after locking
        with contextlib.suppress(OSError):
            text = path.read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace")
        if text.strip():
            break
        time.sleep(0.01)
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if not fields.get("pid"):
        pids = _lock_pids(path)
        return f"pid {', '.join(map(str, pids))}" if pids else "another process"
    return (f"pid {fields['pid']} on {fields.get('host', '?')} since {fields.get('since', '?')} "
            f"({fields.get('command', '?')})")


def _lock_pids(path: Path) -> list[int]:
    """PIDs /proc/locks names for the lock on `path` (Linux), for the message only."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if int(parts[5].rsplit(":", 1)[-1]) == inode:
                pids.append(int(parts[4]))
    return sorted(set(pids))


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
        if raw:
            return raw.replace(b"\0", b" ").decode("utf-8", "replace")[:300]
    return " ".join(sys.argv)[:300]


def acquire(sweep_dir: str | os.PathLike[str], reserve_bytes: int = RESERVE_BYTES,
            orphan_wait_s: float = ORPHAN_WAIT_S) -> StudyLock:
    """Take the folder (creating it) or raise FolderInUse at once; reentrant in one process."""
    key = _key(sweep_dir)
    with _mutex:
        lock = _held.get(key)
        if lock is not None:
            lock.depth += 1
            return lock
        folder = Path(sweep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if io.storage_reason(e):
                raise io.StorageError(path, e) from e
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(
                f"{folder} is in use by another running study: {holder(folder)}. Wait for it to end "
                "(or stop it), then resume with study.resume=true, or choose another hydra.sweep.dir") from None
        except BaseException:
            os.close(fd)
            raise
        lock = StudyLock(folder, fd)
        try:
            _wait_for_orphan_jobs(folder, orphan_wait_s)
            pid = os.getpid()
            lock.header = (f"pid={pid}\nhost={os.uname().nodename}\nsince={now_iso()}\n"
                           f"command={_command(pid)}\n").encode() + b"\0"
            os.ftruncate(fd, 0)
            os.pwrite(fd, lock.header, 0)
            if reserve_bytes > 0:
                with contextlib.suppress(OSError):  # a disk already full: no reserve, the study goes on
                    os.posix_fallocate(fd, len(lock.header), reserve_bytes)
        except BaseException as e:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            if isinstance(e, OSError) and not isinstance(e, io.StorageError) and io.storage_reason(e):
                raise io.StorageError(path, e) from e  # a full disk before the study starts: one line, exit 4
            raise
        _held[key] = lock
        io.on_disk_full(lock.release_reserve)
        return lock


def _wait_for_orphan_jobs(folder: Path, wait_s: float) -> None:
    """Jobs of a study that was killed may still be writing their last result: wait for them."""
    path = folder / JOBS_LOCK_FILE
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pids = _lock_pids(path)
                    who = ", ".join(f"pid {p} ({_command(p)})" for p in pids) or "a job process"
                    raise FolderInUse(f"{folder}: a job of an earlier study is still running there: {who}. "
                                      "Stop it, then run again") from None
                time.sleep(0.05)  # before any job of ours runs: nothing is being measured
    finally:
        os.close(fd)


def release(lock: StudyLock) -> None:
    """Drop one hold; the last one unlocks (only in the process that took it)."""
    with _mutex:
        lock.depth -= 1
        if lock.depth > 0 or lock.fd < 0 or os.getpid() != lock.pid:
            return
        _held.pop(_key(lock.sweep_dir), None)
        with contextlib.suppress(OSError):
            os.ftruncate(lock.fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(lock.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(lock.fd)
        lock.fd = -1


@contextlib.contextmanager
def hold(sweep_dir: str | os.PathLike[str],
         on_refused: Optional[Callable[[BaseException], Any]] = None) -> Iterator[StudyLock]:
    """The folder's lock for a block (reentrant: a no-op where this process already holds it).
    A refusal (FolderInUse, or a StorageError creating the lock file) goes to `on_refused` (the
    sweeper's exit-or-raise) when given, else it is raised."""
    try:
        lock = acquire(sweep_dir)
    except (FolderInUse, io.StorageError) as e:
        if on_refused is None:
            raise
        on_refused(e)
        raise
    try:
        yield lock
    finally:
        release(lock)


# -- in a job process ------------------------------------------------------------------------------
_job_fd = -1


def hold_as_job() -> None:
    """In a job process started by llem's launcher: a shared lock on the folder's jobs lock for the
    life of the process (JOBS_LOCK_ENV names it), so a later study waits until this job is gone."""
    global _job_fd
    path = os.environ.get(JOBS_LOCK_ENV)
    if not path or _job_fd >= 0:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return  # best effort: the folder's own lock still stops a second study
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as e:
        if e.errno != errno.EINTR:
            os.close(fd)
            return
    _job_fd = fd
