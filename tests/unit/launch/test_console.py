"""llem.launch.console on a fake clock: the time formats, one line for a log file, and a terminal
countdown that rewrites its line once per whole second left and clears it at the end."""

from __future__ import annotations

import io
import types

import pytest

from llem.launch import console


class FakeTime:
    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 6))
        self.now += s


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(console, "time", types.SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def test_fmt_s_rounds_and_drops_leading_zero_units() -> None:
    assert [console.fmt_s(s) for s in (None, -3, 0.4, 0.5, 59.4, 60, 61, 3599.5, 3661)] == [
        "?", "0s", "0s", "0s", "59s", "1m00s", "1m01s", "1h00m00s", "1h01m01s"]


def test_a_log_file_gets_one_line_and_one_sleep(clock: FakeTime) -> None:
    out = io.StringIO()
    console.countdown(2.2, "config gap", out)
    assert out.getvalue() == "[llem] waiting 3s (config gap)\n"
    assert clock.sleeps == [2.2]


def test_a_terminal_counts_down_whole_seconds_then_clears_the_line(clock: FakeTime) -> None:
    out = Tty()
    console.countdown(2.5, "cycle gap", out)
    assert out.getvalue().split("\r") == ["", "[llem] cycle gap: next job in 3s ", "[llem] cycle gap: next job in 2s ",
                                          "[llem] cycle gap: next job in 1s ", "\033[K"]
    assert clock.sleeps == [0.5, 1.0, 1.0] and clock.now == pytest.approx(1002.5)


def test_no_gap_no_output(clock: FakeTime) -> None:
    out = Tty()
    console.countdown(0, "gap", out)
    console.countdown(-1, "gap", out)
    assert out.getvalue() == "" and clock.sleeps == []


def test_progress_text_is_the_progress_line_with_the_launchers_prefix() -> None:
    from llem.launch.progress import progress_line

    text = console.progress_text(2, 5, 1, 120.0, label="n=4", index=3, durations_s=[50.0, 70.0])
    assert text == "[llem] " + progress_line(2, 5, 1, 120.0, current="n=4", current_index=3, durations_s=[50.0, 70.0])
    assert text.startswith("[llem] ") and "2/5" in text
