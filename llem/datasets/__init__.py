"""Prompt datasets: `load_prompts(cfg, n, seed)` picks the loader named by `dataset.name`."""

from __future__ import annotations

from llem.datasets.base import DatasetError, load_prompts, needs_tokenizer

__all__ = ["DatasetError", "load_prompts", "needs_tokenizer"]
