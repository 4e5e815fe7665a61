"""`dataset=jsonl`: one JSON object per line of a local file, the prompt in `dataset.column` (or the first
of prompt/text/instruction/input/question)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llem.datasets.base import DatasetError, FileDataset, kind_of, pick_column, prompt_of, read_text, source


class Jsonl(FileDataset):
    name = "jsonl"

    def parse(self, path: Path, column: str | None) -> list[str]:
        return read_jsonl(path, column)


def read_jsonl(path: Path, column: str | None) -> list[str]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{source(path)}: line {lineno} is not JSON ({e}); allowed one JSON object "
                               "per line") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{source(path)}: line {lineno} is {kind_of(row)}, not a JSON object; allowed one "
                               'object per line, e.g. {"prompt": "..."}')
        if all(str(k).startswith("_") for k in row):
            continue  # provenance/metadata records (e.g. line 1 of the AIEnergyScore copy)
        rows.append((lineno, row))
    if not rows:
        raise DatasetError(f"{source(path)} holds no records; allowed one JSON object per line")
    col = pick_column(rows[0][1].keys(), column, source(path))
    prompts = (prompt_of(r.get(col), col, f"{source(path)}: line {lineno}") for lineno, r in rows)
    return [p for p in prompts if p is not None]
