"""`dataset=synthetic`: seeded word salad of exactly `dataset.input_tokens` tokens of the model's tokenizer."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from llem.config.schema import DatasetConfig
from llem.datasets.base import Dataset, DatasetError


class Synthetic(Dataset):
    name = "synthetic"
    needs_tokenizer = True  # measured in the model's own tokens, so made after the tokenizer loads

    def read(self, cfg: DatasetConfig) -> list[str]:
        raise DatasetError("dataset=synthetic is made for a model: load(cfg, n, seed, tokenizer)")

    def load(self, cfg: DatasetConfig, n: int, seed: int, tokenizer: Any = None) -> list[str]:
        """`n` prompts of exactly `dataset.input_tokens` tokens (never shuffled: seeded already)."""
        if tokenizer is None:
            raise DatasetError("dataset=synthetic needs the model's tokenizer")
        return synthetic(n, cfg.input_tokens, seed,
                         lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                         lambda ids: tokenizer.decode(ids))


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
