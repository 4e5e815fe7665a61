"""Prompt loaders for the `dataset/` group: synthetic, aienergyscore, jsonl, csv, hf.

Every loader returns plain strings; the backend tokenizes and truncates them. Bad input raises
DatasetError naming the key, the file and line, and what is allowed: an empty file, a header-only CSV,
no prompt column, a JSONL line that is not an object, a prompt that is not a string (numbers are not
turned into text), bytes that are not UTF-8, fewer prompts than `n`. Files are read as UTF-8 with an
optional byte-order mark; empty prompts are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llem.config.schema import DatasetConfig
from llem.errors import UserError

PROMPT_COLUMNS = ("prompt", "text", "instruction", "input", "question")
NAMES = ("synthetic", "aienergyscore", "jsonl", "csv", "hf")


class DatasetError(UserError, ValueError):
    pass


def needs_tokenizer(cfg: DatasetConfig) -> bool:
    """Synthetic prompts are measured in the model's own tokens, so they come after the tokenizer."""
    return cfg.name == "synthetic"


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


def _source(path: Path) -> str:
    return f"dataset.path={str(path)!r}"


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped (as Excel and Notepad write it)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{_source(path)}: line {line}, column {column}: byte 0x{data[e.start]:02x} is not "
                           "UTF-8; allowed a UTF-8 text file (re-save it as UTF-8, e.g. "
                           f"`iconv -f latin1 -t utf-8 {path.name}`)") from None
    if not text.strip():
        raise DatasetError(f"{_source(path)}: the file is empty; allowed one prompt per line (JSONL) or row (CSV)")
    return text


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _prompt(value: Any, column: str, where: str) -> str | None:
    """The prompt in one record: a string, None for an empty one (skipped); anything else is refused."""
    if value is None:
        raise DatasetError(f"{where} has no {column!r}; allowed every record with a string in column {column!r}")
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {column!r} is {_kind(value)} ({str(value)[:40]}); allowed a string")
    return value if value.strip() else None


def _read_jsonl(path: Path, column: str | None) -> list[str]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{_source(path)}: line {lineno} is not JSON ({e}); allowed one JSON object "
                               "per line") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{_source(path)}: line {lineno} is {_kind(row)}, not a JSON object; allowed one "
                               'object per line, e.g. {"prompt": "..."}')
        if all(str(k).startswith("_") for k in row):
            continue  # provenance/metadata records (e.g. line 1 of the AIEnergyScore copy)
        rows.append((lineno, row))
    if not rows:
        raise DatasetError(f"{_source(path)} holds no records; allowed one JSON object per line")
    col = pick_column(rows[0][1].keys(), column, _source(path))
    prompts = (_prompt(r.get(col), col, f"{_source(path)}: line {lineno}") for lineno, r in rows)
    return [p for p in prompts if p is not None]


def _read_csv(path: Path, column: str | None) -> list[str]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        col = pick_column(reader.fieldnames or [], column, _source(path))
        prompts = [_prompt(row.get(col), col, f"{_source(path)}: line {reader.line_num}") for row in reader]
    except csv.Error as e:
        raise DatasetError(f"{_source(path)}: line {reader.line_num}: not valid CSV ({e})") from None
    if reader.line_num <= 1:
        raise DatasetError(f"{_source(path)} has a header row ({', '.join(reader.fieldnames or [])}) but no "
                           "rows; allowed a header and one prompt per row")
    return [p for p in prompts if p is not None]


def _read_hub(hub_id: str, config: str | None, split: str, column: str | None) -> list[str]:
    from llem.hubdata import offline_unless_reachable

    try:
        with offline_unless_reachable(hub_id):  # not cached and no Hub: one line in seconds (before importing
            try:  # `datasets`, which alone takes seconds), no retries
                import datasets
            except ImportError as e:
                raise DatasetError("dataset=hf/aienergyscore from the Hub needs `pip install llem[datasets]`") from e
            ds = datasets.load_dataset(hub_id, config, split=split)
    except DatasetError:
        raise
    except Exception as e:  # not found, offline and not cached, no such split/config, ...
        first = (str(e).strip().splitlines() or [""])[0]
        raise DatasetError(f"dataset.hub_id={hub_id!r} (config {config}, split {split}) cannot be loaded: "
                           f"{type(e).__name__}: {first}") from e
    col = pick_column(ds.column_names, column, f"dataset.hub_id={hub_id!r}")
    prompts = (_prompt(x, col, f"dataset.hub_id={hub_id!r}: row {i}") for i, x in enumerate(ds[col]) if x is not None)
    return [p for p in prompts if p is not None]


def _file(cfg: DatasetConfig) -> Path:
    if not cfg.path:
        raise DatasetError(f"dataset={cfg.name} needs dataset.path=<file>")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        raise DatasetError(f"dataset.path={cfg.path!r} is a directory; allowed a {cfg.name} file")
    if not path.is_file():
        raise DatasetError(f"dataset.path={cfg.path!r}: no such file")
    return path


def synthetic(n: int, input_tokens: int, seed: int, encode: Callable[[str], list[int]],
              decode: Callable[[list[int]], str]) -> list[str]:
    """Seeded word salad cut to `input_tokens` tokens of the model's own tokenizer."""
    from llem.models.tiny import _WORDS
    from llem.progress import Progress

    rng = random.Random(seed)
    prompts = []
    progress = Progress(n, "synthetic prompts")  # long preparations show progress (outside the window)
    for _ in range(n):
        progress.step()
        text = " ".join(rng.choice(_WORDS) for _ in range(input_tokens * 2 + 8))
        ids = encode(text)[:input_tokens]
        prompt = decode(ids)
        k = len(ids)
        while len(encode(prompt)) > input_tokens and k > 1:  # re-encoding may merge differently
            k -= 1
            prompt = decode(ids[:k])
        prompts.append(prompt)
    progress.done()
    return prompts


def load_prompts(cfg: DatasetConfig, n: int, seed: int, tokenizer: Any = None) -> list[str]:
    """`n` prompts, in file order or shuffled with `seed`."""
    if cfg.name == "synthetic":
        if tokenizer is None:
            raise DatasetError("dataset=synthetic needs the model's tokenizer")
        return synthetic(n, cfg.input_tokens, seed,
                         lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                         lambda ids: tokenizer.decode(ids))
    if cfg.name in ("jsonl", "aienergyscore") and (cfg.path or cfg.name == "jsonl"):
        prompts = _read_jsonl(_file(cfg), cfg.column)
    elif cfg.name == "csv":
        prompts = _read_csv(_file(cfg), cfg.column)
    elif cfg.name in ("hf", "aienergyscore"):
        if not cfg.hub_id:
            raise DatasetError(f"dataset={cfg.name} needs dataset.hub_id=<owner/name>")
        prompts = _read_hub(cfg.hub_id, cfg.hub_config, cfg.split, cfg.column)
    else:
        raise DatasetError(f"dataset.name={cfg.name!r}: allowed {', '.join(NAMES)}")
    if cfg.shuffle:
        random.Random(seed).shuffle(prompts)
    if n > len(prompts):
        where = _source(Path(cfg.path)) if cfg.path else f"dataset.hub_id={cfg.hub_id!r}"
        raise DatasetError(f"n={n} but the dataset has only {len(prompts)} prompts ({where}); allowed "
                           f"n <= {len(prompts)}")
    return prompts[:n]
