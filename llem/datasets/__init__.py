"""Prompt datasets: the registry, the ONE place a dataset is declared (`dataset=<name>`), one module each.

A dataset is a `llem.datasets.base.Dataset` subclass (`read`, optional `problems` checks); `load_prompts`
picks it by `dataset.name`. Pure: a dataset module is imported only when used.
"""

from __future__ import annotations

from typing import Any

from llem.datasets.base import Dataset, DatasetError

DATASETS: dict[str, str] = {  # name -> "module:Class"
    "synthetic": "llem.datasets.synthetic:Synthetic",
    "aienergyscore": "llem.datasets.aienergyscore:AiEnergyScore",
    "jsonl": "llem.datasets.jsonl:Jsonl",
    "csv": "llem.datasets.csv:Csv",
    "hf": "llem.datasets.hf:Hf",
}

__all__ = ["DATASETS", "Dataset", "DatasetError", "dataset", "load_prompts", "needs_tokenizer"]


def dataset(name: str) -> Dataset:
    """The dataset registered as `name`; DatasetError naming the allowed ones otherwise."""
    import importlib

    if name not in DATASETS:
        raise DatasetError(f"dataset.name={name!r}: allowed {', '.join(DATASETS)}")
    module, _, cls = DATASETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def needs_tokenizer(cfg: Any) -> bool:
    """Synthetic prompts are measured in the model's own tokens, so they come after the tokenizer."""
    return cfg.name in DATASETS and dataset(cfg.name).needs_tokenizer


def load_prompts(cfg: Any, n: int, seed: int, tokenizer: Any = None) -> list[str]:
    """`n` prompts of `dataset=<cfg.name>`, in file order or shuffled with `seed`."""
    return dataset(cfg.name).load(cfg, n, seed, tokenizer)
