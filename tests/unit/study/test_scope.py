"""Backend-scoped sweep expansion (pure): independent grids per backend, Hydra's order otherwise."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from llem.study.scope import SweepKey, expand, scope_of

BACKENDS = ("pytorch", "vllm")


def k(key: str, *values: str) -> SweepKey:
    return SweepKey(key, key.lstrip("+~"), tuple(values))


def test_issue_example_plans_four_pytorch_and_four_vllm_configs() -> None:
    keys = [k("backend", "pytorch", "vllm"), k("precision", "fp16", "bf16"),
            k("pytorch.batch_size", "1", "8"), k("vllm.max_num_seqs", "64", "256")]
    out = expand(keys, BACKENDS, "pytorch").configs
    assert out == [
        ["backend=pytorch", "precision=fp16", "pytorch.batch_size=1"],
        ["backend=pytorch", "precision=fp16", "pytorch.batch_size=8"],
        ["backend=pytorch", "precision=bf16", "pytorch.batch_size=1"],
        ["backend=pytorch", "precision=bf16", "pytorch.batch_size=8"],
        ["backend=vllm", "precision=fp16", "vllm.max_num_seqs=64"],
        ["backend=vllm", "precision=fp16", "vllm.max_num_seqs=256"],
        ["backend=vllm", "precision=bf16", "vllm.max_num_seqs=64"],
        ["backend=vllm", "precision=bf16", "vllm.max_num_seqs=256"],
    ]
    assert not any("vllm." in o for c in out[:4] for o in c)  # never sets the section pytorch lacks


def test_without_a_backend_sweep_keys_apply_to_the_backend_in_use() -> None:
    keys = [k("pytorch.batch_size", "1", "8"), k("vllm.max_num_seqs", "64", "256")]
    e = expand(keys, BACKENDS, "vllm")
    assert e.configs == [["vllm.max_num_seqs=64"], ["vllm.max_num_seqs=256"]]
    assert e.notes == ["pytorch.batch_size ignored: no job of this study uses backend=pytorch"]


def test_backend_key_after_scoped_keys_keeps_hydra_product_order() -> None:
    keys = [k("pytorch.batch_size", "1", "8"), k("backend", "pytorch", "vllm")]
    # Hydra's product: (1,pt) (1,vllm) (8,pt) (8,vllm); scoping drops the repeated vllm job
    assert expand(keys, BACKENDS, "pytorch").configs == [
        ["pytorch.batch_size=1", "backend=pytorch"], ["backend=vllm"], ["pytorch.batch_size=8", "backend=pytorch"]]


def test_prefixed_keys_are_scoped_too() -> None:
    keys = [k("backend", "pytorch", "vllm"), k("++vllm.engine_args.max_logprobs", "1", "2")]
    assert expand(keys, BACKENDS, None).configs == [
        ["backend=pytorch"], ["backend=vllm", "++vllm.engine_args.max_logprobs=1"], ["backend=vllm", "++vllm.engine_args.max_logprobs=2"]]


def test_scope_of() -> None:
    assert scope_of("pytorch.batch_size", BACKENDS) == "pytorch"
    assert scope_of("pytorch", BACKENDS) is None  # the section itself (e.g. pytorch=null) is not a knob
    assert scope_of("precision", BACKENDS) is None


values = st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True)


@given(st.lists(st.tuples(st.sampled_from(["x", "y", "z", "w"]), values), max_size=4, unique_by=lambda t: t[0]))
def test_without_scoped_keys_expansion_is_the_cartesian_product(spec: list[tuple[str, list[str]]]) -> None:
    keys = [k(name, *vals) for name, vals in spec]
    expected = [list(c) for c in itertools.product(*[[f"{n}={v}" for v in vals] for n, vals in spec])]
    assert expand(keys, BACKENDS, "pytorch").configs == expected


@given(values, values, values, st.booleans())
def test_scoped_grid_sizes_add_up_per_backend(common: list[str], pt: list[str], vl: list[str],
                                              backend_first: bool) -> None:
    keys = [k("precision", *common), k("pytorch.batch_size", *pt), k("vllm.max_num_seqs", *vl)]
    bkey = k("backend", "pytorch", "vllm")
    keys = [bkey, *keys] if backend_first else [*keys, bkey]
    out = expand(keys, BACKENDS, "pytorch").configs
    assert len(out) == len(common) * (len(pt) + len(vl))
    assert len({tuple(sorted(c)) for c in out}) == len(out)  # no config twice
    for c in out:
        backend = next(o.split("=")[1] for o in c if o.startswith("backend="))
        other = "vllm" if backend == "pytorch" else "pytorch"
        assert not any(o.startswith(other + ".") for o in c)
    assert math.prod([len(common), len(pt)]) == sum(1 for c in out if "backend=pytorch" in c)
