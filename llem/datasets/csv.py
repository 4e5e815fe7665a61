"""`dataset=csv`: a local CSV file with a header row, the prompt in `dataset.column` (or a usual name)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from llem.config.schema import DatasetConfig
from llem.datasets.base import (
    Dataset,
    DatasetError,
    Problem,
    file_problems,
    local_file,
    pick_column,
    prompt_of,
    read_text,
    source,
)


class Csv(Dataset):
    name = "csv"

    def problems(self, cfg: DatasetConfig) -> list[Problem]:
        return file_problems(cfg)

    def read(self, cfg: DatasetConfig) -> list[str]:
        return read_csv(local_file(cfg), cfg.column)


def read_csv(path: Path, column: str | None) -> list[str]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        col = pick_column(reader.fieldnames or [], column, source(path))
        prompts = [prompt_of(row.get(col), col, f"{source(path)}: line {reader.line_num}") for row in reader]
    except csv.Error as e:
        raise DatasetError(f"{source(path)}: line {reader.line_num}: not valid CSV ({e})") from None
    if reader.line_num <= 1:
        raise DatasetError(f"{source(path)} has a header row ({', '.join(reader.fieldnames or [])}) but no "
                           "rows; allowed a header and one prompt per row")
    return [p for p in prompts if p is not None]
