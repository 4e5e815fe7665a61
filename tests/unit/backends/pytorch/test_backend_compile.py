"""torch.compile and the window: every (batch size, padded length) the window runs is compiled during
warmup, and a graph compiled inside the window anyway is detected and warned about.

Real dynamo on the tiny model; its graphs go to dynamo's `eager` backend because inductor's C++
compilation takes about a minute per shape on this CPU (the shapes, guards and recompiles are dynamo's,
the same with any backend).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest

from llem.backends.pytorch.backend import PytorchBackend
from llem.config.schema import ExperimentConfig, ModelConfig, PytorchConfig, WarmupConfig

pytestmark = pytest.mark.slow

# 4 prompts at batch_size=3: a full batch of 3 and a last batch of 1, padded to different lengths.
PROMPTS = ["Energy per token", "The river and the stone city music history science language water",
           "Explain", "Write a poem about light and a kernel cache memory report"]


@pytest.fixture
def eager_dynamo(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    torch._dynamo.reset()  # other tests' graphs and recompile counts must not leak in
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    yield
    torch._dynamo.reset()


def _backend(cache: Path, warmup_tokens: int | None = 2, **pt) -> PytorchBackend:
    cfg = ExperimentConfig(model=ModelConfig(cache_dir=str(cache)),
                           pytorch=dataclasses.replace(PytorchConfig(), **pt),
                           warmup=WarmupConfig(n_batches=1, max_output_tokens=warmup_tokens))
    backend = PytorchBackend(cfg)
    backend.load()
    return backend


def test_warmup_compiles_every_window_shape_including_the_last_partial_batch(llem_cache: Path,
                                                                              eager_dynamo: None) -> None:
    b = _backend(llem_cache, torch_compile=True, batch_size=3, max_output_tokens=5)
    wl = b.prepare(PROMPTS)
    shapes = [[int(ids.shape[0]), int(ids.shape[1])] for _, ids, _ in wl.payload]
    assert [s[0] for s in shapes] == [3, 1] and shapes[0][1] != shapes[1][1]
    b.warmup_step(wl)  # warmup generates 2 tokens; the window 5 (a static cache is sized by it)
    out = b.run(wl)
    report = b.compile_report()
    assert report is not None and report["reason"] == "pytorch.torch_compile=true"
    assert report["shapes_in_window"] == shapes and report["shapes_warmed"] == shapes
    assert report["graphs_compiled_in_window"] == 0 and report["warnings"] == []
    assert [r.output_tokens for r in out.records] == [5, 5, 5, 5]


def test_a_graph_compiled_inside_the_window_is_reported_in_the_result(llem_cache: Path, eager_dynamo: None,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """The whole job with the old warmup (first batch only): the last batch compiles in the window."""
    from llem.config.schema import DatasetConfig, EnergyConfig
    from llem.job import run_job

    monkeypatch.setattr(PytorchBackend, "_warm_compiled_shapes", lambda self, workload: None)
    cfg = ExperimentConfig(model=ModelConfig(cache_dir=str(llem_cache)),
                           pytorch=dataclasses.replace(PytorchConfig(), torch_compile=True, batch_size=3,
                                                       max_output_tokens=3, device="cpu"),
                           warmup=WarmupConfig(n_batches=1), energy=EnergyConfig(meter="none"),
                           dataset=DatasetConfig(name="synthetic", input_tokens=8), n=4)
    result = run_job(cfg, tmp_path / "job", {}, [], "0" * 16)
    report = result.workload["compile"]
    assert [s[0] for s in report["shapes_in_window"]] == [3, 1] and report["shapes_warmed"] == []
    assert report["graphs_compiled_in_window"] >= 1
    assert any("compiled inside the measurement window" in w for w in result.warnings)


def test_eager_runs_report_no_compile_block(llem_cache: Path) -> None:
    b = _backend(llem_cache, batch_size=3, max_output_tokens=2)
    b.warmup_step(b.prepare(PROMPTS))
    assert b.compile_reason() is None and b.compile_report() is None
    b.device = "cuda"  # static cache on CUDA: transformers compiles decode by itself
    b.pt = dataclasses.replace(b.pt, cache_implementation="static")
    assert "transformers compiles decode" in b.compile_reason()
