"""`energy.rapl.root` (llem/energy/meters/rapl/config.py) is the folder the RAPL meter reads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from energy_fakes import intel_tree

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.meters.rapl.config import RaplConfig


def test_the_rapl_meter_reads_the_tree_under_energy_rapl_root(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    tree = intel_tree(root, package_w=40.0, dram_w=8.0)
    (meter,) = build_meters(EnergyConfig(meter="rapl", sample_hz=50.0, rapl=RaplConfig(str(root)))).meters
    assert meter.root == str(root) and {z.zone_id for z in meter.zones} >= {"intel-rapl:0", "intel-rapl:0:1"}
    with tree:
        threading.Event().wait(0.02)
        meter.start()
        threading.Event().wait(0.2)
        reading = meter.stop()
    d = {d.device: d for d in reading.devices}["cpu:package-0"]
    # the fake's 40 W package, read from this tree (known power × the time between the values read)
    assert d.energy_j == pytest.approx(tree.expected_j("intel-rapl:0", d.extra["counter_start_uj"],
                                                       d.extra["counter_end_uj"]), rel=0.01)
    with pytest.raises(MeterUnavailable, match=rf"no RAPL powercap tree at energy.rapl.root={tmp_path}/absent"):
        build_meters(EnergyConfig(meter="rapl", rapl=RaplConfig(str(tmp_path / "absent"))))
