"""`dataset=csv`: a local CSV file with a header row, the prompt in `dataset.column` (or a usual name)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from llem.datasets.base import DatasetError, FileDataset, pick_column, prompt_of, read_text, source


class Csv(FileDataset):
    name = "csv"

    def parse(self, path: Path, column: str | None) -> list[str]:
        return read_csv(path, column)


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
