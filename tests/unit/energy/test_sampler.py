"""llem.energy.sampler on a fake clock: the edge samples bracket the window, flaky reads are counted (the
first one kept), nothing is read after stop, rows come back in time order; the trapezoid integrals on
known numbers."""

from __future__ import annotations

import math

import pytest

from llem.energy.sampler import Sampler, cumulative_trapezoid, trapezoid


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _reader(rows_per_read: int = 1, fail_at: set[float] | None = None):  # noqa: ANN202
    def read(t: float) -> list[dict[str, float]]:
        if fail_at and t in fail_at:
            raise OSError(f"sensor busy at {t}")
        return [{"t_s": t, "power_w": 50.0 + i} for i in range(rows_per_read)]

    return read


def test_start_and_stop_take_the_edge_samples_on_the_callers_clock() -> None:
    clock = Clock()
    s = Sampler(_reader(), hz=10, clock=clock, threaded=False)
    assert s.interval_s == pytest.approx(0.1)
    s.start()
    clock.t = 100.5
    s.sample_now()
    clock.t = 101.0
    rows = s.stop()
    assert [r["t_s"] for r in rows] == [100.0, 100.5, 101.0]
    s.sample_now()  # closed: ignored
    assert len(s.rows) == 3 and not s.running


def test_rows_come_back_in_time_order_with_every_devices_row() -> None:
    clock = Clock()
    s = Sampler(_reader(rows_per_read=2), hz=5, clock=clock, threaded=False)
    s.start()
    clock.t = 99.0  # a clock read out of order (another thread's late sample)
    s.sample_now()
    clock.t = 102.0
    rows = s.stop()
    assert [r["t_s"] for r in rows] == [99.0, 99.0, 100.0, 100.0, 102.0, 102.0]
    assert [r["power_w"] for r in rows[:2]] == [50.0, 51.0]


def test_failed_reads_are_counted_and_the_first_kept_and_start_resets_them() -> None:
    clock = Clock()
    s = Sampler(_reader(fail_at={100.1, 100.2}), hz=10, clock=clock, threaded=False)
    s.start()
    for t in (100.1, 100.2, 100.3):
        clock.t = t
        s.sample_now()
    rows = s.stop()
    assert (s.errors, s.first_error) == (2, "OSError: sensor busy at 100.1")
    assert [r["t_s"] for r in rows] == [100.0, 100.3, 100.3]
    s.start()
    assert (s.errors, s.first_error, len(s.rows)) == (0, None, 1)
    s.stop()


def test_the_thread_samples_between_the_edges_and_is_gone_after_stop() -> None:
    import threading

    s = Sampler(_reader(), hz=200)
    s.start()
    assert s.running
    threading.Event().wait(0.1)
    rows = s.stop()
    assert not s.running and len(rows) >= 2  # the two edges at least; the thread's count depends on the host
    assert rows == sorted(rows, key=lambda r: r["t_s"])


@pytest.mark.parametrize("hz", [0, -1.0])
def test_a_rate_of_zero_or_below_is_refused(hz: float) -> None:
    with pytest.raises(ValueError, match="> 0 Hz"):
        Sampler(_reader(), hz=hz)


def test_trapezoid_on_known_numbers() -> None:
    times, watts = [0.0, 1.0, 3.0, 3.5], [10.0, 20.0, 30.0, 0.0]
    # 15 J + 50 J + 7.5 J (left or right rectangles: 65 J, 80 J)
    assert trapezoid(times, watts) == pytest.approx(72.5)
    assert cumulative_trapezoid(times, watts) == pytest.approx([0.0, 15.0, 65.0, 72.5])
    assert trapezoid([1.0], [99.0]) == 0.0 and cumulative_trapezoid([1.0], [99.0]) == [0.0]
    assert not math.isnan(trapezoid([], []))
