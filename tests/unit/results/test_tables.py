"""llem.results.tables: a table is written as CSV and parquet side by side, atomically (no temp file left,
none on a failure), with the permissions of a shared file, and mixed object columns made parquet-safe."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from llem.results import tables


def test_mixed_object_columns_become_text_and_the_rest_is_untouched() -> None:
    df = pd.DataFrame({"mixed": [1, "a", None, float("nan")], "text": ["x", "y", None, "z"],
                       "num": [1.0, 2.0, 3.0, 4.0], "flags": [True, False, True, None]})
    out = tables.parquet_safe(df)
    assert out["mixed"].tolist()[:2] == ["1", "a"]
    assert out["mixed"].isna().tolist() == [False, False, True, True]  # missing stays missing, not "None"/"nan"
    assert out["text"].equals(df["text"])
    assert out["num"].tolist() == [1.0, 2.0, 3.0, 4.0] and out["flags"].tolist() == [True, False, True, None]
    assert df["mixed"].tolist()[:2] == [1, "a"]  # the caller's frame is not changed
    nested = tables.parquet_safe(pd.DataFrame({"d": [{"a": 1}, {"a": 2}]}))
    assert nested["d"].tolist() == ["{'a': 1}", "{'a': 2}"]  # one kind, but not a parquet scalar


def test_write_table_writes_both_files_readable_as_written(tmp_path: Path) -> None:
    df = pd.DataFrame({"config": ["a", "b"], "energy_j": [1.5, 2.25], "note": [3, "x"]})
    paths = tables.write_table(df, tmp_path / "new", "summary")
    assert [p.name for p in paths] == ["summary.csv", "summary.parquet"]
    assert (tmp_path / "new" / "summary.csv").read_text() == "config,energy_j,note\na,1.5,3\nb,2.25,x\n"
    back = pd.read_parquet(paths[1])
    assert back["energy_j"].tolist() == [1.5, 2.25] and back["note"].tolist() == ["3", "x"]
    assert sorted(os.listdir(tmp_path / "new")) == ["summary.csv", "summary.parquet"]  # no temp files


def test_files_get_the_umask_permissions_not_the_temp_files_0600(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "_umask", lambda: 0o027)
    for path in tables.write_table(pd.DataFrame({"a": [1]}), tmp_path, "t"):
        assert path.stat().st_mode & 0o777 == 0o640


def test_umask_is_read_from_proc_without_changing_it() -> None:
    before = os.umask(0o022)
    try:
        os.umask(0o077)
        assert tables._umask() == 0o077
    finally:
        os.umask(before)


def test_a_failed_parquet_write_leaves_no_temp_file_and_keeps_the_old_table(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tables.write_table(pd.DataFrame({"a": [1]}), tmp_path, "t")
    old = (tmp_path / "t.parquet").read_bytes()

    def broken(self: pd.DataFrame, path: str, **kw: object) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        tables.write_table(pd.DataFrame({"a": [2]}), tmp_path, "t")
    assert (tmp_path / "t.parquet").read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.parquet"]
