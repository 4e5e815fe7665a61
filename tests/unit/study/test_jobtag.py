"""llem.study.jobtag: the one override that carries a job's place in its study, round-tripped and
refused when malformed (pure)."""

from __future__ import annotations

import pytest

from llem.errors import ConfigError
from llem.study.jobtag import (
    TAG_KEY,
    is_bookkeeping,
    parse_tag,
    study_job_of,
    tag_override,
    user_overrides,
)


def test_tag_round_trips_with_cycle_and_index_in_their_places() -> None:
    line = tag_override(index=7, cycle=2, config_hash="c" * 16, study_design_hash="d" * 16)
    assert line == f"++{TAG_KEY}='2:{'c' * 16}:{'d' * 16}:7'"
    assert study_job_of(["n=1", line]) == {"cycle": 2, "config_hash": "c" * 16, "study_design_hash": "d" * 16,
                                           "index": 7}


@pytest.mark.parametrize("bad", ["1:c:d", "1:c:d:x", "-1:c:d:0", "1::d:0", "1:c:d:0:9", ""])
def test_a_malformed_tag_is_a_config_error_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_tag(bad)
    assert TAG_KEY in str(e.value)


def test_bookkeeping_is_the_tag_and_study_job_keys_only() -> None:
    lines = ["n=1", "+study_job.cycle=1", f"++{TAG_KEY}='0:a:b:0'", "study.n_cycles=2", "~study_job.index"]
    assert user_overrides(lines) == ["n=1", "study.n_cycles=2"]
    assert not is_bookkeeping("study_jobs=1") and not is_bookkeeping("study.job=1")


def test_study_job_overrides_without_a_tag_parse_ints_nulls_and_strings() -> None:
    got = study_job_of(["study_job.cycle=3", "study_job.index=0", "study_job.config_hash='abc'",
                        "study_job.study_design_hash=null"])
    assert got == {"cycle": 3, "index": 0, "config_hash": "abc", "study_design_hash": None}
    assert study_job_of(["n=1"]) == {}
