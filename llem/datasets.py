"""Prompt loaders for the `dataset/` group: synthetic, aienergyscore, jsonl, csv, hf.

Every loader returns plain strings; the backend tokenizes and truncates them. Bad input raises
DatasetError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import csv
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


def _read_jsonl(path: Path, column: str | None) -> list[str]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"dataset.path={str(path)!r}: line {lineno} is not JSON ({e})") from e
            if isinstance(row, dict) and all(str(k).startswith("_") for k in row):
                continue  # provenance/metadata records (e.g. line 1 of the AIEnergyScore copy)
            rows.append(row)
    if not rows:
        raise DatasetError(f"dataset.path={str(path)!r} holds no records")
    col = pick_column(rows[0].keys(), column, f"dataset.path={str(path)!r}")
    return [str(r[col]) for r in rows if r.get(col) not in (None, "")]


def _read_csv(path: Path, column: str | None) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        col = pick_column(reader.fieldnames or [], column, f"dataset.path={str(path)!r}")
        return [row[col] for row in reader if row.get(col)]


def _read_hub(hub_id: str, config: str | None, split: str, column: str | None) -> list[str]:
    try:
        import datasets
    except ImportError as e:
        raise DatasetError("dataset=hf/aienergyscore from the Hub needs `pip install llem[datasets]`") from e
    ds = datasets.load_dataset(hub_id, config, split=split)
    col = pick_column(ds.column_names, column, f"dataset.hub_id={hub_id!r}")
    return [str(x) for x in ds[col] if x]


def _file(cfg: DatasetConfig) -> Path:
    if not cfg.path:
        raise DatasetError(f"dataset={cfg.name} needs dataset.path=<file>")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset.path={cfg.path!r}: no such file")
    return path


def synthetic(n: int, input_tokens: int, seed: int, encode: Callable[[str], list[int]],
              decode: Callable[[list[int]], str]) -> list[str]:
    """Seeded word salad cut to `input_tokens` tokens of the model's own tokenizer."""
    from llem.models.tiny import _WORDS

    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        text = " ".join(rng.choice(_WORDS) for _ in range(input_tokens * 2 + 8))
        ids = encode(text)[:input_tokens]
        prompt = decode(ids)
        k = len(ids)
        while len(encode(prompt)) > input_tokens and k > 1:  # re-encoding may merge differently
            k -= 1
            prompt = decode(ids[:k])
        prompts.append(prompt)
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
        raise DatasetError(f"n={n} but the dataset has only {len(prompts)} prompts; use n<={len(prompts)}")
    return prompts[:n]
