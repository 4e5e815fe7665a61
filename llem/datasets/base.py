"""What every dataset shares: the `Dataset` ABC, DatasetError and the careful text/record readers.

One module per dataset (synthetic, aienergyscore, jsonl, csv, hf) subclasses `Dataset`; the registry in
llem/datasets/__init__.py names them. Every loader returns plain strings; the backend tokenizes and truncates them. Bad input raises
DatasetError naming the key, the file and line, and what is allowed: an empty file, a header-only CSV,
no prompt column, a JSONL line that is not an object, a prompt that is not a string (numbers are not
turned into text), bytes that are not UTF-8, fewer prompts than `n`. Files are read as UTF-8 with an
optional byte-order mark; empty prompts are skipped.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llem.config.schema import DatasetConfig
from llem.errors import UserError

PROMPT_COLUMNS = ("prompt", "text", "instruction", "input", "question")


class DatasetError(UserError, ValueError):
    pass


Problem = tuple[str, Any, str]  # (key, value, allowed), as ConfigError takes them


class Dataset(ABC):
    """One source of prompts (`dataset=<name>`). Subclasses: `load`, and `problems` for checks that run
    before any model loads."""

    name: str = "dataset"
    needs_tokenizer = False  # True: prompts are cut in the model's own tokens (loaded after the tokenizer)

    def problems(self, cfg: DatasetConfig) -> list[Problem]:
        """Knob problems of this dataset (key, value, allowed); [] when its knobs are fine."""
        return []

    @abstractmethod
    def read(self, cfg: DatasetConfig) -> list[str]:
        """Every prompt this dataset has, in its own order."""

    def load(self, cfg: DatasetConfig, n: int, seed: int, tokenizer: Any = None) -> list[str]:
        """`n` prompts, in file order or shuffled with `seed` (dataset.shuffle)."""
        prompts = self.read(cfg)
        if cfg.shuffle:
            random.Random(seed).shuffle(prompts)
        if n > len(prompts):
            where = source(Path(cfg.path)) if cfg.path else f"dataset.hub_id={cfg.hub_id!r}"
            raise DatasetError(f"n={n} but the dataset has only {len(prompts)} prompts ({where}); allowed "
                               f"n <= {len(prompts)}")
        return prompts[:n]


class FileDataset(Dataset):
    """A dataset in one local file (`dataset.path`, checked before any model loads), parsed by `parse`."""

    def problems(self, cfg: DatasetConfig) -> list[Problem]:
        return file_problems(cfg)

    def read(self, cfg: DatasetConfig) -> list[str]:
        return self.parse(local_file(cfg), cfg.column)

    @abstractmethod
    def parse(self, path: Path, column: str | None) -> list[str]:
        """Every prompt of the file at `path`, from `column` (None: the first of PROMPT_COLUMNS it has)."""


def file_problems(cfg: DatasetConfig) -> list[Problem]:
    """dataset.path of a dataset that reads a local file: set, a file, there."""
    if not cfg.path:
        return [("dataset.path", cfg.path, f"a {cfg.name} file path (dataset={cfg.name} reads a local file)")]
    if Path(cfg.path).expanduser().is_dir():
        return [("dataset.path", cfg.path, f"a {cfg.name} file, not a directory")]
    if not Path(cfg.path).expanduser().is_file():
        return [("dataset.path", cfg.path, "an existing file (no such file)")]
    return []


def pick_column(columns: Iterable[str], wanted: str | None, source: str) -> str:
    cols = [c for c in columns if not str(c).startswith("_")]
    if wanted:
        if wanted not in cols:
            raise DatasetError(f"dataset.column={wanted!r} is not in {source}; columns there: {cols}")
        return wanted
    for name in PROMPT_COLUMNS:
        if name in cols:
            return name
    raise DatasetError(
        f"dataset.column is not set and {source} has none of {list(PROMPT_COLUMNS)}; "
        f"columns there: {cols}. Set dataset.column=<name>."
    )


def source(path: Path) -> str:
    return f"dataset.path={str(path)!r}"


def read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped (as Excel and Notepad write it)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{source(path)}: line {line}, column {column}: byte 0x{data[e.start]:02x} is not "
                           "UTF-8; allowed a UTF-8 text file (re-save it as UTF-8, e.g. "
                           f"`iconv -f latin1 -t utf-8 {path.name}`)") from None
    if not text.strip():
        raise DatasetError(f"{source(path)}: the file is empty; allowed one prompt per line (JSONL) or row (CSV)")
    return text


def kind_of(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def prompt_of(value: Any, column: str, where: str) -> str | None:
    """The prompt in one record: a string, None for an empty one (skipped); anything else is refused."""
    if value is None:
        raise DatasetError(f"{where} has no {column!r}; allowed every record with a string in column {column!r}")
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {column!r} is {kind_of(value)} ({str(value)[:40]}); allowed a string")
    return value if value.strip() else None


def local_file(cfg: DatasetConfig) -> Path:
    if not cfg.path:
        raise DatasetError(f"dataset={cfg.name} needs dataset.path=<file>")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        raise DatasetError(f"dataset.path={cfg.path!r} is a directory; allowed a {cfg.name} file")
    if not path.is_file():
        raise DatasetError(f"dataset.path={cfg.path!r}: no such file")
    return path


