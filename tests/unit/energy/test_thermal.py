"""ThermalWarmup: a skipped warmup writes no temperatures; a run one writes them in result.json's order."""

from __future__ import annotations

from llem.energy.thermal import NO_SOURCE, ThermalWarmup, thermal_warmup


def test_skipped_and_run_blocks_keep_their_keys() -> None:
    assert thermal_warmup(lambda: None, lambda: None, 10.0).as_dict() == {
        "ran_s": 0.0, "steps": 0, "settled": None, "reason": NO_SOURCE}
    t = {"now": 0.0}

    def step() -> None:
        t["now"] += 1.0

    got = thermal_warmup(lambda: {"gpu:0": 50.0, "gpu:1": 55.0}, step, 10.0, plateau_s=2.0, clock=lambda: t["now"])
    assert isinstance(got, ThermalWarmup) and got.settled is True and got.steps == 2
    assert list(got.as_dict()) == ["ran_s", "steps", "start_c", "end_c", "settled", "reason"]
    assert (got.start_c, got.end_c) == (55.0, 55.0)  # the hottest device
    assert ThermalWarmup(3.0, 3, False, "limit", 40.0, 60.0).as_dict()["settled"] is False
