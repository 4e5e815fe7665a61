"""llem.results.confdiff: in what two jobs' configs differ, read from their result.json, with the
settings that do not change a measurement left out (as config_hash leaves them out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llem.results.confdiff import differences, job_config, show_value


@pytest.mark.no_result_schema
def test_job_config_is_flat_and_drops_bookkeeping_and_cache_locations(tmp_path: Path) -> None:
    config = {"n": 4, "model": {"name": "tiny-gpt2", "cache_dir": "/scratch"}, "study": {"n_cycles": 3},
              "quiet": True, "pytorch": {"batch_size": 2, "decoding": {"top_k": 5}}}
    (tmp_path / "result.json").write_text(json.dumps({"config": config}))
    assert job_config(tmp_path) == {"n": 4, "model.name": "tiny-gpt2", "pytorch.batch_size": 2,
                                    "pytorch.decoding.top_k": 5}


@pytest.mark.no_result_schema
def test_an_unreadable_result_gives_no_config(tmp_path: Path) -> None:
    assert job_config(tmp_path) == {}  # no file
    (tmp_path / "result.json").write_text("{torn")
    assert job_config(tmp_path) == {}
    (tmp_path / "result.json").write_text("[1, 2]")  # not an object
    assert job_config(tmp_path) == {}


def test_differences_a_first_sorted_with_unset_and_a_limit() -> None:
    a = {"n": 4, "precision": "fp32", "seed": None, "quiet": True}
    b = {"n": 16, "precision": "fp32", "seed": 7, "quiet": False, "extra": 1}
    assert differences(a, b) == ["extra: <unset> vs 1", "n: 4 vs 16", "quiet: true vs false", "seed: null vs 7"]
    assert differences(a, b, limit=2) == ["extra: <unset> vs 1", "n: 4 vs 16", "+2 more"]
    assert differences(a, b, limit=4) == differences(a, b)  # exactly the limit: no "+0 more"
    assert differences(a, dict(a)) == []


def test_show_value_writes_yaml_like_literals() -> None:
    assert [show_value(v) for v in (None, True, False, 0, 1.5, "x")] == ["null", "true", "false", "0", "1.5", "x"]
