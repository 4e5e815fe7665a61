"""llem.study.exits: under Hydra's command-line wrapper a study's outcome is one `llem:` line and the
documented exit code; anywhere else (the API, a test) the same error is raised for the caller."""

from __future__ import annotations

from typing import Any

import pytest

from llem.errors import ConfigError
from llem.study.exits import StudyFailed, exit_or_raise, under_hydra_cli

# A stand-in for hydra._internal.utils.run_and_report: the same function name in a module of that name.
_HYDRA_SRC = "def run_and_report(fn):\n    return fn()\n"


def _as_hydra_cli(fn: Any) -> Any:
    scope: dict[str, Any] = {"__name__": "hydra._internal.utils"}
    exec(compile(_HYDRA_SRC, "hydra/_internal/utils.py", "exec"), scope)
    return scope["run_and_report"](fn)


def test_outside_hydras_wrapper_the_error_is_raised() -> None:
    assert under_hydra_cli() is False
    with pytest.raises(StudyFailed) as e:
        exit_or_raise(StudyFailed("2 of 5 jobs failed", failed=2, total=5))
    assert (e.value.failed, e.value.total, e.value.exit_code) == (2, 5, 1)


def test_a_function_of_that_name_elsewhere_is_not_hydras_wrapper() -> None:
    def run_and_report(fn: Any) -> Any:
        return fn()

    assert run_and_report(under_hydra_cli) is False
    assert _as_hydra_cli(under_hydra_cli) is True


def test_under_hydras_wrapper_one_line_and_the_errors_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _as_hydra_cli(lambda: exit_or_raise(StudyFailed("2 of 5 jobs failed\nsee manifest.json")))
    assert e.value.code == 1
    assert capsys.readouterr().err == "llem: 2 of 5 jobs failed\n  see manifest.json\n"
    with pytest.raises(SystemExit) as e:
        _as_hydra_cli(lambda: exit_or_raise(ConfigError([("n", -1, "an integer >= 1")]), printed=True))
    assert e.value.code == 2
    assert capsys.readouterr().err == ""  # already printed: not twice


def test_an_error_without_an_exit_code_exits_1() -> None:
    with pytest.raises(SystemExit) as e:
        _as_hydra_cli(lambda: exit_or_raise(RuntimeError("boom")))
    assert e.value.code == 1
