"""The real Zeus package (ZeusMonitor) behind llem's `zeus` meter, reading a fake powercap tree.

This machine has no GPU and no RAPL; Zeus's own RAPL reader is pointed at the tree the RAPL tests use
(its module constant `RAPL_DIR`, the path it globs for `intel-rapl:N`), so everything from Zeus's
window API to llem's EnergyReading is the real code.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
from energy_fakes import intel_tree

zeus_rapl = pytest.importorskip("zeus.device.cpu.rapl")


def test_zeus_meter_reports_package_and_dram_energy_of_the_window(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import zeus.device.cpu as zeus_cpu

    from llem.energy.meters.zeus.meter import ZeusMeter

    tree = intel_tree(tmp_path, package_w=30.0, dram_w=5.0)
    tree.period_s = 0.002
    monkeypatch.setattr(zeus_rapl, "RAPL_DIR", str(tmp_path))
    zeus_rapl.rapl_is_available.cache_clear()
    monkeypatch.setattr(zeus_cpu, "_cpus", None)  # Zeus caches the CPUs it found; restored after the test
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        with tree:
            meter = ZeusMeter()
            meter.probe()
            assert meter.describe() == "zeus: GPUs [], CPU packages [0]"
            t0 = time.perf_counter()
            meter.start()
            threading.Event().wait(1.0)
            reading = meter.stop()
            outer_s = time.perf_counter() - t0
            meter.close()
    finally:
        zeus_rapl.rapl_is_available.cache_clear()
        # Zeus keeps a wraparound-tracker process per RAPL file until interpreter exit (atexit); in a
        # llem job that is the job's end, here it would outlive the test and pollute later process checks.
        from multiprocessing import resource_tracker

        shared = getattr(resource_tracker._resource_tracker, "_pid", None)  # multiprocessing's, not Zeus's
        mine = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.pid != shared]
        for p in mine:
            p.kill()
        psutil.wait_procs(mine, timeout=5)
    by = {d.device: d for d in reading.devices}
    assert reading.measured and set(by) == {"cpu:package-0", "dram:package-0"}
    assert 1.0 <= reading.duration_s <= outer_s  # Zeus's window: inside our start..stop, at least the wait
    # Zeus reports mJ; llem's reading is in J: known power × Zeus's own window time
    assert by["cpu:package-0"].energy_j == pytest.approx(30.0 * reading.duration_s, rel=0.05)
    assert by["dram:package-0"].energy_j == pytest.approx(5.0 * reading.duration_s, rel=0.05)
    assert {d.method for d in reading.devices} == {"zeus"}
