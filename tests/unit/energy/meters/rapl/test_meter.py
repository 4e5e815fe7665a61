"""RAPL meter against fake powercap trees advanced at known powers, and one end-to-end llem run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import read_result, run_llem
from energy_fakes import FakeRaplTree, Zone, intel_tree

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.block import energy_block
from llem.energy.meters.rapl import meter as rapl_mod
from llem.energy.meters.rapl.config import RaplConfig
from llem.energy.meters.rapl.meter import RaplMeter, discover, wrapped_delta_uj


def test_wrapped_delta() -> None:
    assert wrapped_delta_uj(100, 250, 1000) == 150
    assert wrapped_delta_uj(900, 50, 1000) == 150  # wrapped once at the max range


def test_package_and_dram_energy_within_1pct_across_wraparounds(tmp_path: Path) -> None:
    # A 20 J counter range at 45 W wraps every 0.44 s (real ones: minutes); the 100 Hz sampler sees each wrap.
    tree = intel_tree(tmp_path, package_w=45.0, dram_w=7.5, max_range_uj=20_000_000, start_uj=19_000_000)
    meter = RaplMeter(str(tmp_path), sample_hz=100)
    meter.probe()
    with tree:
        threading.Event().wait(0.05)
        meter.start()
        threading.Event().wait(1.5)
        reading = meter.stop()
    by = {d.device: d for d in reading.devices}
    assert set(by) == {"cpu:package-0", "dram:package-0", "core:package-0"}  # mmio duplicate skipped
    for device, rel, watts in (("cpu:package-0", "intel-rapl:0", 45.0),
                               ("dram:package-0", "intel-rapl:0/intel-rapl:0:1", 7.5)):
        d = by[device]
        # within 1% of known power × the time between the counter values it read (however late the fake's
        # writer ran); within 3% of power × the meter's own duration (a stalled writer leaves stale files)
        reference = tree.expected_j(rel, d.extra["counter_start_uj"], d.extra["counter_end_uj"])
        assert d.energy_j == pytest.approx(reference, rel=0.01)
        assert d.energy_j == pytest.approx(watts * reading.duration_s, rel=0.03)
    assert by["cpu:package-0"].extra["wraparounds"] >= 3
    block = energy_block([reading], [], reading.duration_s, output_tokens=90, requests=3)
    # core is part of the package: listed, never added to cpu_j
    assert block["cpu_j"] == pytest.approx(by["cpu:package-0"].energy_j) and block["basis"] == "cpu"
    assert block["dram_j"] == pytest.approx(by["dram:package-0"].energy_j)
    assert block["measured_total_j"] == pytest.approx(block["cpu_j"] + block["dram_j"])
    rows = [r for r in reading.timeseries if r["device"] == "cpu:package-0"]
    assert len(rows) >= 75 and rows[-1]["energy_j"] == pytest.approx(by["cpu:package-0"].energy_j)
    # per-sample power (W) is each sample's energy over its own interval: time-weighted, it is the fake's 45 W
    # (a single sample's value depends on when the fake's writer thread last ran, so no per-sample bound)
    span = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    weighted = sum(b["power_w"] * (b["elapsed_s"] - a["elapsed_s"]) for a, b in zip(rows, rows[1:]))
    assert weighted / span == pytest.approx(45.0, rel=0.03)


def test_sampling_too_slow_for_the_wrap_is_warned_about(tmp_path: Path) -> None:
    tree = intel_tree(tmp_path, package_w=45.0, max_range_uj=2_000_000)  # wraps every 44 ms
    meter = RaplMeter(str(tmp_path), sample_hz=4)
    with tree:
        meter.start()
        threading.Event().wait(0.6)
        reading = meter.stop()
    assert any(w.startswith("cpu:package-0: samples") and "wraparound may have been missed" in w
               for w in reading.warnings)


def test_amd_and_nested_layouts_are_discovered(tmp_path: Path) -> None:
    amd = tmp_path / "amd"
    FakeRaplTree(amd, [Zone("intel-rapl:0", "package-0", 60), Zone("intel-rapl:0:0", "core", 30),
                       Zone("intel-rapl:1", "package-1", 60)])
    assert [(z.device, z.kind) for z in discover(amd)] == [
        ("cpu:package-0", "cpu"), ("core:package-0", "cpu_core"), ("cpu:package-1", "cpu")]
    nested = tmp_path / "nested"  # Zeus-style container mount: <root>/intel-rapl/intel-rapl:0/...
    FakeRaplTree(nested, [Zone("intel-rapl/intel-rapl:0", "package-0", 10),
                          Zone("intel-rapl/intel-rapl:0/intel-rapl:0:0", "dram", 2),
                          Zone("intel-rapl/intel-rapl:1", "psys", 90)])
    zones = {z.device: z.kind for z in discover(nested)}
    assert zones == {"cpu:package-0": "cpu", "dram:package-0": "dram", "psys:intel-rapl:1": "psys"}


def test_unreadable_counters_say_how_to_fix_permissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    intel_tree(tmp_path)
    target = tmp_path / "intel-rapl:0" / "energy_uj"
    if os.geteuid() == 0:  # root reads anything: make the read itself fail as it does for a user
        real = rapl_mod.read_uj

        def denied(zone):
            if zone.path / "energy_uj" == target:
                raise PermissionError(13, "Permission denied", str(target))
            return real(zone)

        monkeypatch.setattr(rapl_mod, "read_uj", denied)
    else:
        target.chmod(0)
    with pytest.raises(MeterUnavailable) as err:
        build_meters(EnergyConfig(meter="rapl", rapl=RaplConfig(str(tmp_path))))
    msg = str(err.value)
    assert msg.startswith("energy.meter=rapl: RAPL energy counters are not readable")
    assert str(target) in msg and "chmod a+r" in msg and "energy.rapl.root" in msg
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path))))  # auto: a note, not an error
    assert sel.meters[0].name == "none" and any("chmod a+r" in n for n in sel.notes)


def test_missing_tree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match=r"no RAPL powercap tree at energy.rapl.root=.*absent"):
        build_meters(EnergyConfig(meter="rapl", rapl=RaplConfig(str(tmp_path / "absent"))))


@pytest.mark.slow
def test_llem_with_rapl_writes_energy_block_and_timeseries(tmp_path: Path, llem_cache: Path) -> None:
    import pandas as pd

    root = tmp_path / "powercap"
    work = tmp_path / "work"
    work.mkdir()
    tree = intel_tree(root, package_w=30.0, dram_w=5.0)
    tree.period_s = 0.005  # light on the CPU the llem subprocess needs
    with tree:
        proc = run_llem(["energy=rapl", f"energy.rapl.root={root}", "energy.sample_hz=100", "energy.baseline_s=1.0",
                         "energy.baseline_ttl_s=0", "n=4", "pytorch.max_output_tokens=128"], work, llem_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in work.rglob("result.json")]
    r = read_result(folder)
    e = r["energy"]
    assert r["status"] == "completed" and e["measured"] and e["meters"] == ["rapl"] and e["basis"] == "cpu"
    window_s = r["timing"]["window_s"]
    assert e["cpu_j"] == pytest.approx(30.0 * window_s, rel=0.1)  # the fake package's 30 W
    assert e["dram_j"] == pytest.approx(5.0 * window_s, rel=0.1)  # and its DRAM's 5 W, not folded into cpu_j
    assert e["j_per_output_token"] == pytest.approx(e["cpu_j"] / r["workload"]["output_tokens"])
    assert e["wh_per_1000_queries"] == pytest.approx(e["cpu_j"] / 4 * 1000 / 3600)
    assert e["mean_power_w"] == pytest.approx(30.0, rel=0.1)  # the fake package's power
    # baseline measured before model load: the same 30 W, so the workload "added" ~nothing
    base = e["baseline"]["devices"]["cpu:package-0"]
    assert base["power_w"] == pytest.approx(30.0, rel=0.03) and base["cached"] is False
    assert abs(e["adjusted"]["cpu_j"]) < 0.1 * e["cpu_j"]
    ph = e["phases"]
    assert ph["prefill_j"] >= 0 and ph["decode_j"] > 0 and ph["other_j"] >= 0
    assert ph["prefill_j"] + ph["decode_j"] + ph["other_j"] == pytest.approx(ph["window"]["cpu_j"], rel=1e-9)
    ts = pd.read_parquet(folder / "timeseries.parquet")
    assert {"t_s", "elapsed_s", "device", "kind", "power_w", "energy_j"} <= set(ts.columns)
    assert set(ts["device"]) >= {"cpu:package-0", "dram:package-0"} and len(ts) >= 2 * 3
    assert "timeseries.parquet" in r["identity"]["files"]
