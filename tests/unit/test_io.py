"""llem.io: storage failures classified by errno (disk full vs not writable), one retry after the
disk-full reserve is released, torn files told apart from missing ones, set-aside names that never
overwrite, and byte sizes in binary units. (fsync of file and folder: tests/properties/test_boundaries.py;
permissions under each umask and the retry in the space the study lock's reserve gives back:
tests/properties/test_study_integrity.py.)"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from llem import io


@pytest.mark.parametrize(("code", "reason"), [
    (errno.ENOSPC, "disk_full"), (errno.EDQUOT, "disk_full"), (errno.EROFS, "io_error"), (errno.EACCES, "io_error"),
    (errno.EPERM, "io_error"), (errno.EIO, "io_error"), (errno.ENOENT, None), (None, None),
])
def test_storage_reason_by_errno(code: int | None, reason: str | None) -> None:
    assert io.storage_reason(OSError(code, "x") if code else ValueError("x")) == reason


def test_storage_reason_in_a_jobs_error_text() -> None:
    assert io.storage_reason_in("OSError: [Errno 28] No space left on device: '/x'") == "disk_full"
    assert io.storage_reason_in("Read-only file system") == "io_error"
    assert io.storage_reason_in("[Errno 2] No such file") is None


def test_human_bytes_in_binary_units() -> None:
    assert [io.human_bytes(n) for n in (0, 1023, 1024, 1536 * 1024, 5 * 1024**4, 2048 * 1024**4)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "5.0 TiB", "2048.0 TiB"]


def test_a_full_disk_with_nothing_to_release_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_once", full)
    monkeypatch.setattr(io, "_space_releasers", [])
    with pytest.raises(io.StorageError) as e:
        io.atomic_write_bytes(tmp_path / "r.json", b"{}")
    err = e.value
    assert err.reason == "disk_full" and err.exit_code == io.STORAGE_EXIT_CODE == 4 and err.errno == errno.ENOSPC
    assert str(err).startswith(f"cannot write {tmp_path / 'r.json'}: No space left on device (")
    assert "free some space" in str(err) and "study.resume=true" in str(err)
    back = pickle.loads(pickle.dumps(err))  # travels from a job process to the launcher
    assert (type(back), back.reason, back.path, str(back), back.errno) == (
        io.StorageError, "disk_full", err.path, str(err), errno.ENOSPC)


def test_other_os_errors_pass_through_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(path: Path, data: bytes) -> None:
        raise FileNotFoundError(errno.ENOENT, "gone")

    monkeypatch.setattr(io, "_write_once", gone)
    with pytest.raises(FileNotFoundError):
        io.atomic_write_bytes(tmp_path / "x", b"")


def test_a_failed_write_leaves_no_temp_file_and_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    io.atomic_write_json(target, {"v": 1})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(io.StorageError, match="make the folder writable"):
        io.atomic_write_json(target, {"v": 2})
    assert io.read_json(target) == {"v": 1} and os.listdir(tmp_path) == ["result.json"]


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "empty"), (b"  \n", "empty"), (b'{"a": 1', "not valid JSON"), (b"\xff\xfe", "not UTF-8"),
    (b"[1]", "holds a JSON list, not an object"), (b"null", "holds a JSON null, not an object"),
])
def test_torn_files_say_why(tmp_path: Path, raw: bytes, why: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(raw)
    with pytest.raises(io.TornFile) as e:
        io.read_json_object(path)
    assert e.value.why.startswith(why) and e.value.path == str(path)


def test_a_missing_file_is_none_and_a_folder_is_torn(tmp_path: Path) -> None:
    assert io.read_json_object(tmp_path / "none.json") is None
    with pytest.raises(io.TornFile, match="is a folder"):
        io.read_json_object(tmp_path)
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert io.read_json_object(tmp_path / "ok.json") == {"a": [1]}


def test_set_aside_never_overwrites_an_earlier_torn_copy(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    names = []
    for text in ("1", "2", "3"):
        path.write_text(text)
        names.append(io.set_aside(path, "20260101").name)
    assert names == ["plan.json.torn-20260101", "plan.json.torn-20260101-1", "plan.json.torn-20260101-2"]
    assert (tmp_path / "plan.json.torn-20260101").read_text() == "1" and not path.exists()
    assert io.set_aside(path, "x") is None


def test_a_read_only_folder_does_not_spend_the_disk_full_reserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, released = [], []

    def read_only(path: Path, data: bytes) -> None:
        calls.append(path)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io, "_write_once", read_only)
    monkeypatch.setattr(io, "_space_releasers", [lambda: released.append(1) or True])
    with pytest.raises(io.StorageError) as e:
        io.atomic_write_bytes(tmp_path / "r.json", b"{}")
    assert e.value.reason == "io_error" and len(calls) == 1 and released == []
