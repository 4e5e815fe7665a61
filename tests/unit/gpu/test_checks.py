"""llem.gpu.checks (pure): the range checks of gpu.* and study.gaps / study.cool.* on their boundaries,
each refusal naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from llem.config.schema import CoolConfig, GpuConfig, StudyConfig
from llem.gpu.checks import check_gpu_config, check_study_gaps, clock_range


class Collect:
    """The checker interface the config validation hands in: add(key, value, allowed) and one_of."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, Any, str]] = []

    def add(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append((key, value, allowed))

    def one_of(self, key: str, value: Any, options: tuple[str, ...]) -> None:
        if value not in options:
            self.add(key, value, f"one of {', '.join(options)}")


def _gpu(**kw: Any) -> list[tuple[str, Any, str]]:
    c = Collect()
    check_gpu_config(c, type("Cfg", (), {"gpu": GpuConfig(**kw)})())
    return c.problems


def _study(gaps: Any = True, **cool: Any) -> list[tuple[str, Any, str]]:
    c = Collect()
    study = dataclasses.replace(StudyConfig(), gaps=gaps, cool=CoolConfig(**cool))
    check_study_gaps(c, type("Cfg", (), {"study": study})())
    return c.problems


@pytest.mark.parametrize(("value", "expect"), [
    (None, None), (1410, (1410, 1410)), (1410.7, (1410, 1410)), ([210, 1980], (210, 1980)),
    ([1000, 1000], (1000, 1000)), ((5, 6), (5, 6)),
])
def test_clock_ranges_that_are_allowed(value: Any, expect: Any) -> None:
    assert clock_range(value) == expect


@pytest.mark.parametrize("value", [0, -1, True, "1410", [1980, 210], [0, 100], [100], [1, 2, 3], [True, 5]])
def test_clock_ranges_that_are_refused_say_what_is_wanted(value: Any) -> None:
    assert isinstance(clock_range(value), str)


def test_default_gpu_settings_pass_and_each_bad_one_names_its_key() -> None:
    assert _gpu() == []
    assert _gpu(power_limit_w=0) == [("gpu.power_limit_w", 0, "null (leave as is) or a positive number of watts")]
    assert _gpu(power_limit_w=0.5) == [] and _gpu(power_limit_w=True)[0][0] == "gpu.power_limit_w"
    assert [p[0] for p in _gpu(sm_clock_mhz=[2, 1])] == ["gpu.sm_clock_mhz"]
    assert _gpu(mem_clock_mhz=[1000, 2000]) == [("gpu.mem_clock_mhz", [1000, 2000],
                                                  "null or one supported memory clock in MHz")]
    assert _gpu(mem_clock_mhz=[1593, 1593]) == [] and _gpu(mem_clock_mhz=1593) == []
    assert _gpu(mem_clock_mhz=-5) == [("gpu.mem_clock_mhz", -5, "a positive number of MHz")]
    assert _gpu(persistence="off") == [("gpu.persistence", "off", "one of leave, on")]


@pytest.mark.parametrize("gaps", [True, False, "adaptive", "fixed"])
def test_study_gaps_allowed(gaps: Any) -> None:
    assert _study(gaps) == []


def test_study_gaps_and_cool_refused_on_their_boundaries() -> None:
    assert [p[0] for p in _study("sometimes")] == ["study.gaps"]
    assert _study(temp_c=0, power_w=0, max_s=0) == []  # 0 is allowed: >= 0
    assert _study(temp_c=-0.1) == [("study.cool.temp_c", -0.1, "a number >= 0")]
    assert _study(max_s=True) == [("study.cool.max_s", True, "a number >= 0")]
    assert _study(poll_s=0) == [("study.cool.poll_s", 0, "a number > 0")]
    assert _study(poll_s=0.01) == []
