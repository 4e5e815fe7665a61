"""Write a DataFrame as CSV and parquet side by side, atomically (a reader never sees half a file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from llem.io import atomic_write_text


def parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing kinds (a number in one job, text in another) become text, as parquet needs
    one type per column; everything else is left as it is."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kinds = {type(v) for v in out[col].dropna()}
        if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return out


def _umask() -> int:
    """The process umask without os.umask's set-and-restore (which races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_table(df: pd.DataFrame, folder: str | os.PathLike[str], stem: str) -> list[Path]:
    """`<folder>/<stem>.csv` and `<folder>/<stem>.parquet`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = atomic_write_text(folder / f"{stem}.csv", df.to_csv(index=False))
    parquet_path = folder / f"{stem}.parquet"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".parquet.tmp", dir=folder)
    os.close(fd)
    try:
        parquet_safe(df).to_parquet(tmp, index=False)
        os.replace(tmp, parquet_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    umask = _umask()
    for path in (csv_path, parquet_path):  # temp files are 0600; tables are for sharing like the PNGs beside them
        os.chmod(path, 0o666 & ~umask)
    return [csv_path, parquet_path]
