"""Tiny causal LMs that llem builds itself: no network, no GPU, deterministic.

The model gets random weights from a fixed seed and a byte-level BPE tokenizer trained on the spot;
both are saved once into the cache folder and then loaded through `from_pretrained`, exactly the
path a Hub model takes. Builds are atomic (temp folder + rename), so parallel jobs are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

BUILDER_VERSION = 1
VOCAB_SIZE = 1024
SEED = 1234

ARCHS: dict[str, dict[str, Any]] = {
    "tiny-gpt2": {
        "model_type": "gpt2",
        "n_layer": 2,
        "n_head": 2,  # head size 32: the smallest vLLM's CPU attention supports
        "n_embd": 64,
        "n_positions": 1024,
    },
    "tiny-llama": {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head size 32 (vLLM CPU minimum)
        "num_key_value_heads": 1,
        "hidden_size": 64,
        "intermediate_size": 128,
        "max_position_embeddings": 1024,
    },
}

_WORDS = ["energy", "token", "model", "power", "watt", "joule", "latency", "batch", "prompt", "decode", "prefill", "cache", "memory", "kernel", "gpu", "cpu", "measure", "time", "speed", "data", "study", "cycle", "config", "sweep", "result", "value", "mean", "test", "run", "job", "the", "a", "of", "and", "to", "in", "is", "that", "for", "on", "with", "as", "by", "it", "this", "from", "be", "are", "was", "at", "or", "an", "which", "we", "can", "more", "each", "light", "river", "stone", "city", "music", "history", "science", "language", "water", "number", "system", "question", "answer", "write", "read", "explain", "describe", "summary", "story", "poem", "letter", "code", "function", "list", "table", "chart", "report"]


def cache_root(cache_dir: str | None = None) -> Path:
    return Path(cache_dir or os.environ.get("LLEM_CACHE") or Path.home() / ".cache" / "llem")


def _spec_hash(name: str) -> str:
    spec = {"arch": ARCHS[name], "vocab": VOCAB_SIZE, "seed": SEED, "v": BUILDER_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]


def corpus(n_lines: int = 2000, seed: int = SEED) -> list[str]:
    """Deterministic pseudo-text to train the tokenizer on."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 20))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return lines


def _train_tokenizer(out: Path) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=VOCAB_SIZE, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    tok.save_pretrained(out)
    return tok


def _build_model(arch: dict[str, Any], out: Path, vocab_size: int, eos_id: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    arch = dict(arch)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=eos_id,
                                  eos_token_id=eos_id, pad_token_id=eos_id, **arch)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)


def ensure_tiny_model(name: str, cache_dir: str | None = None) -> Path:
    """Path of a ready tiny model folder, building it the first time."""
    if name not in ARCHS:
        raise ValueError(f"builtin model {name!r}: allowed {', '.join(ARCHS)}")
    root = cache_root(cache_dir) / "models"
    target = root / f"{name}-{_spec_hash(name)}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _build_atomically(ARCHS[name], target)
    return target


def build_model_folder(out: str | os.PathLike[str], base: str = "tiny-gpt2", **arch: Any) -> Path:
    """A model folder at `out` (must not exist): the builtin `base` with `arch` overrides (e.g.
    n_layer=4), for loading as `model.id=<out>` — tests of local folders of different sizes."""
    if base not in ARCHS:
        raise ValueError(f"base={base!r}: allowed {', '.join(ARCHS)}")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    _build_atomically({**ARCHS[base], **arch}, target)
    return target


def _build_atomically(arch: dict[str, Any], target: Path) -> None:
    """Tokenizer + random-weight model into a temp folder beside `target`, then one rename."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = _train_tokenizer(tmp)
        _build_model(arch, tmp, vocab_size=len(tok), eos_id=tok.eos_token_id)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
