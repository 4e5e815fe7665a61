"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Files are created with mode 0666 minus the umask (0644 by default), like every other file in a
result folder. A write that fails for lack of space or on a read-only or failing disk raises
`StorageError` (an OSError) whose message names the path, the free space and what to do. A process
that owns a study folder keeps a little space in reserve there (llem.study.lock): on the first
ENOSPC/EDQUOT the reserve is given back and the write is tried once more, so the launcher can still
record that the disk filled up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from llem.errors import UserError

STORAGE_EXIT_CODE = 4  # `python -m llem -m ...` when the disk filled up or the folder cannot be written
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
IO_ERROR_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
STORAGE_MARKERS = {"disk_full": ("[Errno 28]", "[Errno 122]", "No space left on device", "Disk quota exceeded"),
                   "io_error": ("[Errno 30]", "[Errno 5]", "Read-only file system", "Input/output error")}

# Called (once each) when a write hits ENOSPC/EDQUOT; each returns True if it freed space.
_space_releasers: list[Callable[[], bool]] = []


def on_disk_full(release: Callable[[], bool]) -> None:
    _space_releasers.append(release)


def storage_reason(exc: BaseException) -> Optional[str]:
    """`disk_full` (ENOSPC, EDQUOT), `io_error` (EROFS, EACCES, EPERM, EIO) or None."""
    if isinstance(exc, StorageError):
        return exc.reason
    code = getattr(exc, "errno", None)
    if code in DISK_FULL_ERRNOS:
        return "disk_full"
    if code in IO_ERROR_ERRNOS:
        return "io_error"
    return None


def storage_reason_in(text: str) -> Optional[str]:
    """The storage reason a job's error text or traceback shows, if any."""
    for reason, markers in STORAGE_MARKERS.items():
        if any(m in text for m in markers):
            return reason
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_space_text(path: str | os.PathLike[str]) -> str:
    """'12.0 MiB free of 64.0 MiB' for the filesystem holding `path` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError as e:
        return f"free space unknown ({e.strerror or e})"
    return f"{human_bytes(usage.free)} free of {human_bytes(usage.total)}"


class StorageError(UserError, OSError):
    """A file could not be written: disk full (`reason` disk_full) or not writable (io_error). A host
    problem the user fixes (free space, permissions), so one line and its own exit code, no traceback."""

    exit_code = STORAGE_EXIT_CODE

    def __init__(self, path: str | os.PathLike[str], cause: OSError) -> None:
        self.reason = storage_reason(cause) or "io_error"
        self.path = str(path)
        what = ("free some space (or raise the quota)" if self.reason == "disk_full"
                else "make the folder writable (or choose another output folder)")
        message = (f"cannot write {self.path}: {cause.strerror or cause} ({free_space_text(path)}); {what}, "
                   "then run again (a study continues with study.resume=true)")
        super().__init__(cause.errno, message)
        self.strerror = message

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> Any:  # picklable (a job's error travels back to the launcher)
        return (_rebuild_storage_error, (self.errno, self.strerror, self.reason, self.path))


class StorageExit(SystemExit):
    """Stop a study on a storage failure: exit code 4 (STORAGE_EXIT_CODE), after one line on stderr.
    A SystemExit, so `except Exception` in callers lets it through (as Ctrl-C's exit 130 does)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(STORAGE_EXIT_CODE)
        self.message = message
        self.reason = reason


def _rebuild_storage_error(code: int, message: str, reason: str, path: str) -> StorageError:
    err = StorageError.__new__(StorageError)
    OSError.__init__(err, code, message)
    err.strerror, err.reason, err.path = message, reason, path
    return err


def _write_once(path: Path, data: bytes) -> None:
    # O_EXCL on a unique name instead of mkstemp: mkstemp makes 0600 files; here the umask decides
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_once(path, data)
        except OSError as e:
            if storage_reason(e) != "disk_full" or not _release_space():
                raise
            _write_once(path, data)  # once more, in the space the reserve gave back
    except StorageError:
        raise
    except OSError as e:
        if storage_reason(e) is None:
            raise
        raise StorageError(path, e) from e
    return path


def _release_space() -> bool:
    freed = False
    while _space_releasers:
        freed = _space_releasers.pop(0)() or freed
    return freed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class TornFile(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, empty, not UTF-8,
    not JSON, the wrong JSON type): something to redo or rebuild, never a crash."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = str(path)
        self.why = why


def read_json_object(path: str | os.PathLike[str]) -> Optional[dict[str, Any]]:
    """The JSON object in `path`; None when there is no such file; TornFile when it is unreadable."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise TornFile(path, "is a folder") from None
    if not raw.strip():
        raise TornFile(path, "empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TornFile(path, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise TornFile(path, f"not valid JSON (truncated?): {e}") from None
    if not isinstance(data, dict):
        raise TornFile(path, f"holds a JSON {type(data).__name__.replace('NoneType', 'null')}, not an object")
    return data


def set_aside(path: str | os.PathLike[str], stamp: str) -> Optional[Path]:
    """Rename `path` to `<name>.torn-<stamp>` (never over another file); None if it is gone."""
    path = Path(path)
    target = path.with_name(f"{path.name}.torn-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.torn-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target
