"""A RAPL counter that never moves is not 0 J: the zone is left out, a warning says why, and with no
moving package counter the reading is `measured: false` (fake powercap trees at known powers; 0 W = frozen)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from energy_fakes import FakeRaplTree, Zone, intel_tree

from llem.energy.block import energy_block
from llem.energy.meters.rapl.meter import STUCK_AFTER_S, RaplMeter


def _window(tree: FakeRaplTree, root: Path, seconds: float) -> object:
    meter = RaplMeter(str(root), sample_hz=50)
    with tree:
        threading.Event().wait(0.02)
        meter.start()
        threading.Event().wait(seconds)
        return meter.stop()


def test_a_frozen_package_counter_is_not_measured_and_warned_about(tmp_path: Path) -> None:
    tree = FakeRaplTree(tmp_path, [Zone("intel-rapl:0", "package-0", 0.0, start_uj=123_456),
                                   Zone("intel-rapl:0/intel-rapl:0:0", "dram", 6.0)])
    reading = _window(tree, tmp_path, 0.3)
    assert reading.measured is False
    assert reading.reason.startswith("RAPL package counter(s) did not move during the window (cpu:package-0)")
    assert [d.device for d in reading.devices] == ["dram:package-0"]  # the frozen package adds no 0 J
    (w,) = reading.warnings
    assert w.startswith(f"cpu:package-0: RAPL counter {tmp_path / 'intel-rapl:0' / 'energy_uj'} stayed at 123456 µJ")
    assert "frozen counter, not measured (not 0 J)" in w
    (frozen,) = reading.details["frozen_zones"]
    assert frozen["counter_uj"] == 123_456 and frozen["frozen"] is True
    # every zone is read at every sample: the frozen zone's span is the window's, to the float (seconds, ~0.3)
    assert frozen["duration_s"] == pytest.approx(reading.duration_s, rel=1e-9) and reading.duration_s >= 0.29
    block = energy_block([reading], [], reading.duration_s, output_tokens=10, requests=1)
    assert block["measured"] is False and block["cpu_j"] is None and block["energy_j"] is None
    assert "did not move" in block["reason"] and w in block["warnings"]


def test_a_frozen_dram_counter_is_dropped_while_the_package_is_measured(tmp_path: Path) -> None:
    tree = FakeRaplTree(tmp_path, [Zone("intel-rapl:0", "package-0", 40.0),
                                   Zone("intel-rapl:0/intel-rapl:0:0", "dram", 0.0),
                                   Zone("intel-rapl:0/intel-rapl:0:1", "uncore", 0.0)])
    reading = _window(tree, tmp_path, 0.2)
    assert reading.measured is True and reading.reason is None
    assert [d.device for d in reading.devices] == ["cpu:package-0"]
    block = energy_block([reading], [], reading.duration_s, output_tokens=10, requests=1)
    # the fake package draws 40 W over the window; its writer thread (0.5 ms period) may lag tens of ms on a
    # loaded machine in a 0.2 s window, hence 25 %: still far from a unit slip (x1000) or a zone mix-up
    assert block["cpu_j"] == pytest.approx(40.0 * reading.duration_s, rel=0.25)
    assert block["dram_j"] is None  # not 0.0: DRAM was not measured
    assert len(reading.warnings) == 1 and reading.warnings[0].startswith("dram:package-0: RAPL counter")
    # an idle integrated GPU's uncore plane may sit still: listed as frozen, no warning (never added anyway)
    assert {f["device"] for f in reading.details["frozen_zones"]} == {"dram:package-0", "uncore:package-0"}


def test_a_moving_counter_gives_no_frozen_warning(tmp_path: Path) -> None:
    reading = _window(intel_tree(tmp_path, package_w=30.0, dram_w=4.0), tmp_path, 0.15)
    assert reading.measured and reading.details["frozen_zones"] == [] and reading.warnings == []


def test_a_window_too_short_to_tell_is_still_not_counted_as_zero(tmp_path: Path) -> None:
    tree = FakeRaplTree(tmp_path, [Zone("intel-rapl:0", "package-0", 0.0, start_uj=7)])
    meter = RaplMeter(str(tmp_path), sample_hz=1)
    meter.start()  # no writer thread: the counter cannot move
    reading = meter.stop()
    assert tree.zones[0].power_w == 0.0
    assert reading.measured is False and reading.devices == []
    (w,) = reading.warnings
    assert "too short to tell a frozen counter" in w and f"< {STUCK_AFTER_S * 1e3:g} ms" in w
    assert reading.details["frozen_zones"][0]["frozen"] is False
