"""Schema validation, friendly override errors and config hashing (pure, fast)."""

from __future__ import annotations

import dataclasses

import pytest

from llem.config.overrides import check_argv, scope_backend_overrides, unknown_key
from llem.config.schema import ExperimentConfig, PytorchConfig, VllmConfig
from llem.config.validate import ConfigError, problems, validate
from llem.study.hashing import config_hash, design_hash


def _cfg(**kw) -> ExperimentConfig:
    pt = kw.pop("pytorch", PytorchConfig())
    return dataclasses.replace(ExperimentConfig(pytorch=pt), **kw)


def test_valid_default_passes() -> None:
    assert validate(_cfg()).n == 16


@pytest.mark.parametrize(
    ("cfg", "key", "fragment"),
    [
        (_cfg(n=0), "n", ">= 1"),
        (_cfg(pytorch=PytorchConfig(batch_size=0)), "pytorch.batch_size", ">= 1"),
        (_cfg(pytorch=PytorchConfig(load_in_4bit=True, load_in_8bit=True)), "pytorch.load_in_8bit", "choose one"),
        (_cfg(pytorch=PytorchConfig(load_in_8bit=True, device="cpu")), "pytorch.load_in_8bit", "CUDA"),
        (_cfg(pytorch=PytorchConfig(device="gpu0")), "pytorch.device", "cuda:N"),
        (_cfg(pytorch=PytorchConfig(attn_implementation="flash")), "pytorch.attn_implementation", "sdpa"),
        (_cfg(vllm=VllmConfig()), "vllm.*", "only with backend=vllm"),
        (_cfg(backend="vllm", pytorch=None), "vllm", "section"),
        (_cfg(backend="vllm", pytorch=None, vllm=VllmConfig(top_p=0.0)), "vllm.top_p", "1"),
        (_cfg(backend="vllm", pytorch=None, vllm=VllmConfig(block_size=7)), "vllm.block_size", "16"),
        (_cfg(backend="vllm", pytorch=None, vllm=VllmConfig(max_tokens=8, min_tokens=9)), "vllm.min_tokens",
         "vllm.max_tokens=8"),
        (_cfg(backend="vllm", pytorch=None, vllm=VllmConfig(max_input_tokens=64, max_tokens=64, max_model_len=100)),
         "vllm.max_model_len", "128"),
        (_cfg(backend="vllm", pytorch=None, vllm=VllmConfig(gpu_memory_utilization=1.5)),
         "vllm.gpu_memory_utilization", "1"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(cfg: ExperimentConfig, key: str, fragment: str) -> None:
    found = problems(cfg)
    assert any(k == key and fragment in allowed for k, _, allowed in found), found
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value) and "allowed" in str(err.value)


def test_unknown_key_suggests_the_close_one() -> None:
    msg = unknown_key("pytorch.batch_sise")
    assert msg is not None and "pytorch.batch_size" in msg and "max_output_tokens" in msg
    assert unknown_key("pytorch.batch_size") is None
    assert unknown_key("vllm.engine_args.anything") is None  # free-form passthrough dict
    assert check_argv(["-m", "backend=vllm", "hydra.run.dir=x", "+vllm.engine_args.foo=1", "n=3"]) is None
    assert "unknown key 'foo'" in (check_argv(["+foo=1"]) or "")  # `+` names a real field too
    assert "did you mean 'n'" in (check_argv(["nn=3"]) or "").lower()


def _resolved(**over) -> dict:
    base = {"backend": "pytorch", "n": 16, "precision": "fp32", "pytorch": {"batch_size": 1}, "vllm": None,
            "study": {"n_cycles": 1}, "study_job": {"cycle": 0}, "quiet": False}
    base.update(over)
    return base


def test_config_hash_ignores_study_settings_and_key_order() -> None:
    h = config_hash(_resolved())
    assert len(h) == 16 and int(h, 16) >= 0
    assert config_hash(_resolved(study={"n_cycles": 5}, study_job={"cycle": 3}, quiet=True)) == h
    assert config_hash(dict(reversed(list(_resolved().items())))) == h
    model = {"id": "tiny", "revision": None}
    hm = config_hash(_resolved(model=model))
    assert config_hash(_resolved(model={**model, "cache_dir": "/scratch/me"})) == hm  # where files live
    assert config_hash(_resolved(model={**model, "revision": "abc123"})) != hm
    assert config_hash(_resolved(pytorch={"batch_size": 8})) != h
    assert config_hash(_resolved(precision="bf16")) != h
    assert design_hash([h, "a" * 16]) == design_hash(["a" * 16, h, h])


def test_single_backend_keys_become_one_value_sweeps_in_multirun_only() -> None:
    argv = ["-m", "backend=pytorch,vllm", "vllm.max_tokens=8", "vllm.max_num_seqs=4,8", "n=4"]
    out, problem = scope_backend_overrides(argv)
    assert problem is None
    assert out == ["-m", "backend=pytorch,vllm", "vllm.max_tokens=choice(8)", "vllm.max_num_seqs=4,8", "n=4"]
    assert scope_backend_overrides(["backend=vllm", "vllm.max_tokens=8"]) == (["backend=vllm", "vllm.max_tokens=8"], None)


def test_a_knob_of_another_backend_in_a_single_run_names_both() -> None:
    _, problem = scope_backend_overrides(["backend=pytorch", "vllm.max_tokens=8"])
    assert problem and "'vllm.max_tokens=8'" in problem and "backend=pytorch" in problem and "backend=vllm" in problem
