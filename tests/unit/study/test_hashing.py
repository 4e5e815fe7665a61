"""llem.study.hashing on known inputs: the digest is sha256 of canonical JSON cut to 16 hex characters,
and the measured part drops exactly what does not change a measurement (the unused backends' sections,
offline serving knobs, default node/basis/GPU settings, bookkeeping) and nothing else."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from llem.study.hashing import HASH_LEN, canonical_json, config_hash, design_hash, digest, measured_part


def _config(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "backend": "pytorch", "model": {"name": "tiny-gpt2", "cache_dir": "/a"}, "precision": "fp32",
        "pytorch": {"batch_size": 1}, "vllm": {"max_num_seqs": 4}, "openai": {"url": "http://127.0.0.1:1"},
        "scenario": {"name": "offline", "request_rate": 2.0},
        "energy": {"meter": "auto", "basis": "auto", "node": {"source": "none"}},
        "gpu": {"power_limit_w": None, "sm_clock_mhz": "leave"},
        "study": {"n_cycles": 3}, "quiet": True,
    }
    base.update(changes)
    return base


def test_digest_is_the_first_16_hex_chars_of_sha256_of_sorted_compact_json() -> None:
    obj = {"b": [1, 2.5], "a": "x"}
    text = '{"a":"x","b":[1,2.5]}'
    assert canonical_json(obj) == text
    assert digest(obj) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert HASH_LEN == 16 and len(digest(obj)) == 16


def test_canonical_json_ignores_key_order_hashes_enums_as_values_and_keeps_1_0_apart_from_1() -> None:
    class Kind(Enum):
        A = "a"

    assert canonical_json({"x": 1, "y": {"q": 2, "p": 1}}) == canonical_json({"y": {"p": 1, "q": 2}, "x": 1})
    assert canonical_json({"k": Kind.A}) == '{"k":"a"}'
    assert digest({"v": 1.0}) != digest({"v": 1})
    assert json.loads(canonical_json((3, 4))) == [3, 4]


def test_the_unused_backends_sections_do_not_enter_the_hash_but_the_used_one_does() -> None:
    h = config_hash(_config())
    assert config_hash(_config(vllm={"max_num_seqs": 64})) == h  # pytorch job: vllm's section is not used
    assert config_hash(_config(openai={"url": "http://127.0.0.1:2"})) == h
    assert config_hash(_config(pytorch={"batch_size": 2})) != h
    vllm_job = config_hash(_config(backend="vllm"))
    assert config_hash(_config(backend="vllm", pytorch={"batch_size": 8})) == vllm_job
    assert config_hash(_config(backend="vllm", vllm={"max_num_seqs": 8})) != vllm_job
    assert set(measured_part(_config())) == {"backend", "model", "precision", "pytorch", "energy"}


def test_serving_knobs_enter_only_a_serving_scenario() -> None:
    h = config_hash(_config())
    assert config_hash(_config(scenario={"name": "offline", "request_rate": 9.0})) == h
    serving = config_hash(_config(scenario={"name": "serving", "request_rate": 2.0}))
    assert serving != h
    assert config_hash(_config(scenario={"name": "serving", "request_rate": 3.0})) != serving


def test_default_energy_and_gpu_settings_hash_as_before_they_existed_and_a_choice_counts() -> None:
    before = _config(energy={"meter": "auto"})
    del before["gpu"]
    without = config_hash(before)
    h = config_hash(_config())
    assert h == without  # basis=auto, node.source=none and a GPU left as it is change nothing
    assert config_hash(_config(energy={"meter": "auto", "basis": "gpu", "node": {"source": "none"}})) != h
    assert config_hash(_config(energy={"meter": "auto", "basis": "auto", "node": {"source": "ipmi"}})) != h
    assert config_hash(_config(gpu={"power_limit_w": 300, "sm_clock_mhz": "leave"})) != h


def test_bookkeeping_and_cache_locations_do_not_enter_the_hash() -> None:
    h = config_hash(_config())
    assert config_hash(_config(study={"n_cycles": 9}, quiet=False, hydra={"x": 1}, study_job={"cycle": 2})) == h
    assert config_hash(_config(model={"name": "tiny-gpt2", "cache_dir": "/elsewhere"})) == h
    assert config_hash(_config(model={"name": "tiny-gpt2", "cache_dir": "/a", "revision": "r1"})) != h
    assert "cache_dir" not in measured_part(_config())["model"]


def test_design_hash_is_the_set_of_configs() -> None:
    a, b = "a" * 16, "b" * 16
    assert design_hash([a, b]) == design_hash([b, a, a]) == digest([a, b])
    assert design_hash([a]) != design_hash([a, b])
