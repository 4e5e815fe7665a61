"""The transformers backend on the tiny model, in process: token counts, padding, truncation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llem.backends.pytorch.backend import PytorchBackend
from llem.config.schema import Decoding, ExperimentConfig, ModelConfig, PytorchConfig

pytestmark = pytest.mark.slow

PROMPTS = ["Energy per token", "The river and the stone city music history science language water",
           "Explain", "Write a poem about light and a kernel cache memory report"]


def _backend(cache: Path, **pt) -> PytorchBackend:
    cfg = ExperimentConfig(model=ModelConfig(cache_dir=str(cache)),
                           pytorch=dataclasses.replace(PytorchConfig(), **pt))
    backend = PytorchBackend(cfg)
    backend.load()
    return backend


def test_fixed_length_generation_gives_exact_token_counts(llem_cache: Path) -> None:
    b = _backend(llem_cache, batch_size=3, max_output_tokens=7)
    out = b.run(b.prepare(PROMPTS))
    assert sorted(r.index for r in out.records) == [0, 1, 2, 3]  # every prompt used, once
    assert [r.output_tokens for r in out.records] == [7, 7, 7, 7]
    assert all(len(r.token_times) == 7 and r.ttft_s and r.ttft_s > 0 for r in out.records)
    assert len(out.phases) == 2  # two batches: 3 + 1
    tok_counts = [len(b.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert [r.input_tokens for r in sorted(out.records, key=lambda r: r.index)] == tok_counts


def test_left_padding_gives_the_same_greedy_tokens_as_unbatched(llem_cache: Path) -> None:
    b = _backend(llem_cache, batch_size=4, max_output_tokens=6)
    wl = b.prepare(PROMPTS)
    _, ids, mask = wl.payload[0]
    assert b.tokenizer.padding_side == "left" and (mask[:, -1] == 1).all()  # padding on the left
    batched = b._generate(ids, mask, 6, None)[:, ids.shape[1]:]
    for i, prompt in enumerate(PROMPTS):
        one = b.tokenizer([prompt], return_tensors="pt")
        single = b._generate(one["input_ids"], one["attention_mask"], 6, None)[:, one["input_ids"].shape[1]:]
        assert batched[i].tolist() == single[0].tolist(), f"prompt {i} differs when batched"


def test_truncation_to_max_input_tokens(llem_cache: Path) -> None:
    b = _backend(llem_cache, batch_size=2, max_input_tokens=5, max_output_tokens=2)
    wl = b.prepare(PROMPTS)
    assert max(wl.input_tokens) == 5
    assert wl.truncated == sum(1 for p in PROMPTS if len(b.tokenizer(p)["input_ids"]) > 5)


def test_sampling_is_seeded_and_model_facts(llem_cache: Path) -> None:
    import torch

    b = _backend(llem_cache, decoding=Decoding.sample, temperature=1.0, top_k=0, max_output_tokens=12)
    _, ids, mask = b.prepare(PROMPTS[:2]).payload[0]
    draws = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        draws.append(b._generate(ids, mask, 12, None).tolist())
    assert draws[0] == draws[1] and draws[0] != draws[2]
    facts = b.model_facts()
    # tiny-gpt2 (built from its config: exact): 203,776 weights, of which embeddings are the token table
    # (596 x 64) and GPT-2's position table (1024 x 64); the output projection is tied (counted once)
    assert facts.parameters == 203_776 and facts.non_embedding_parameters == 203_776 - (596 + 1024) * 64
    assert facts.dtype == "float32" and facts.device == "cpu"


def test_cv_warmup_stops_once_latency_settles_and_never_past_its_bound(llem_cache: Path) -> None:
    from llem.config.schema import WarmupConfig
    from llem.job import warmup
    from llem.measure.stats import cv

    b = _backend(llem_cache, batch_size=4, max_output_tokens=8)
    wl = b.prepare(PROMPTS)
    loose = WarmupConfig(mode="cv", n_batches=3, max_batches=8, cv_threshold=10.0, cv_window=3)
    assert len(warmup(b, wl, dataclasses.replace(b.cfg, warmup=loose))) == 3  # settled at the minimum
    never = dataclasses.replace(loose, cv_threshold=1e-12)  # real latencies never agree to 1e-12
    lat = warmup(b, wl, dataclasses.replace(b.cfg, warmup=never))
    assert len(lat) == 8 and cv(lat[-3:]) >= 1e-12  # bounded by max_batches
    fixed = dataclasses.replace(loose, mode="fixed", n_batches=2)
    assert len(warmup(b, wl, dataclasses.replace(b.cfg, warmup=fixed))) == 2
