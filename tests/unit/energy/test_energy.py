"""Meter selection, the energy block's derived metrics and labels, optional meters, thermal warmup."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from energy_fakes import host, intel_tree

from llem.config.schema import EnergyConfig
from llem.energy import MeterUnavailable, build_meters
from llem.energy.base import DeviceEnergy, EnergyReading
from llem.energy.block import energy_block
from llem.energy.meters.codecarbon.config import CodeCarbonConfig
from llem.energy.meters.rapl.config import RaplConfig
from llem.energy.thermal import thermal_warmup, warmup_for
from llem.errors import ConfigError


def test_derived_metrics() -> None:
    r = EnergyReading("nvml", True, 4.0, [DeviceEnergy("gpu:0", "gpu", 720.0, "nvml_counter")])
    b = energy_block([r], ["nvml: picked"], 4.0, output_tokens=1200, requests=24, total_flop=3.6e12)
    assert (b["basis"], b["energy_j"], b["gpu_j"], b["cpu_j"]) == ("gpu", 720.0, 720.0, None)
    assert b["j_per_output_token"] == pytest.approx(0.6)
    assert b["j_per_request"] == pytest.approx(30.0)
    assert b["output_tokens_per_j"] == pytest.approx(1200 / 720)
    assert b["wh_per_1000_queries"] == pytest.approx(30.0 * 1000 / 3600)  # 8.33 Wh per 1,000 queries
    assert b["mean_power_w"] == pytest.approx(180.0)
    assert b["j_per_flop"] == pytest.approx(2e-10)
    assert b["measured"] and not b["estimate"] and b["selection"] == ["nvml: picked"] and b["warnings"] == []


def test_gpu_and_cpu_meters_are_reported_separately() -> None:
    gpu = EnergyReading("nvml", True, 2.0, [DeviceEnergy("gpu:0", "gpu", 500.0, "nvml_counter"),
                                             DeviceEnergy("gpu:1", "gpu", 300.0, "nvml_counter")])
    cpu = EnergyReading("rapl", True, 2.0, [DeviceEnergy("cpu:package-0", "cpu", 90.0, "rapl_counter"),
                                             DeviceEnergy("core:package-0", "cpu_core", 60.0, "rapl_counter"),
                                             DeviceEnergy("dram:package-0", "dram", 12.0, "rapl_counter")])
    b = energy_block([gpu, cpu], [], 2.0, 100, 4)
    assert (b["gpu_j"], b["cpu_j"], b["dram_j"]) == (800.0, 90.0, 12.0)
    assert b["basis"] == "gpu" and b["energy_j"] == 800.0 and b["j_per_output_token"] == pytest.approx(8.0)
    assert b["measured_total_j"] == pytest.approx(902.0) and b["measured_total_parts"] == ["gpu", "cpu", "dram"]


def test_codecarbon_estimates_are_labelled_and_never_summed_with_measurements() -> None:
    est = EnergyReading("codecarbon", True, 2.0, [DeviceEnergy("cpu:codecarbon", "cpu", 50.0, "codecarbon_estimate",
                                                               estimate=True)])
    only = energy_block([est], [], 2.0, 10, 1)
    assert only["estimate"] is True and only["cpu_j"] == 50.0 and only["basis"] == "cpu"
    assert only["measured_total_j"] is None and only["devices"][0]["estimate"] is True
    gpu = EnergyReading("nvml", True, 2.0, [DeviceEnergy("gpu:0", "gpu", 400.0, "nvml_counter")])
    mixed = energy_block([gpu, est], [], 2.0, 10, 1)
    assert mixed["estimate"] is False and mixed["cpu_j"] is None and mixed["estimates"]["cpu_j"] == 50.0
    assert mixed["measured_total_j"] == 400.0


def test_auto_picks_nvml_and_rapl_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", host("A100"))  # real clock: build_meters probes the counter step
    intel_tree(tmp_path)
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path))))
    assert [m.name for m in sel.meters] == ["nvml", "rapl"]
    assert sel.notes[0].startswith("nvml: picked: nvml: 1 GPU(s): gpu:0 NVIDIA A100-SXM4-80GB (energy counter)")
    assert sel.notes[1].startswith("rapl: picked: rapl: cpu:package-0")
    assert sel.notes[-1].startswith("auto picked nvml + rapl (GPU and CPU energy reported separately")
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path)), cpu=False))
    assert [m.name for m in sel.meters] == ["nvml"] and "rapl: not tried (energy.cpu=false)" in sel.notes
    for m in sel.meters:
        m.close()
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path)), gpu=False))
    assert [m.name for m in sel.meters] == ["rapl"] and sel.notes[0] == "nvml: not tried (energy.gpu=false)"


def test_auto_with_nothing_records_none_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    sel = build_meters(EnergyConfig(meter="auto", rapl=RaplConfig(str(tmp_path / "absent"))))
    assert [m.name for m in sel.meters] == ["none"]
    reading = sel.meters[0].stop()
    b = energy_block([reading], sel.notes, 1.0, 10, 1)
    assert not b["measured"] and "no supported energy meter" in b["reason"] and b["energy_j"] is None
    assert "nvml: unavailable: NVML bindings missing: pip install nvidia-ml-py" in b["selection"]
    none = build_meters(EnergyConfig(meter="none", reason="disabled by configuration (energy=none)"))
    assert none.meters[0].stop().reason == "disabled by configuration (energy=none)"


def test_bad_energy_knobs_are_named_before_any_model_loads() -> None:
    with pytest.raises(ConfigError) as err:
        build_meters(EnergyConfig(gpu_indices=[0, -1], thermal_plateau_s=0.0, baseline_ttl_s=-5))
    keys = [p[0] for p in err.value.problems]
    assert keys == ["energy.gpu_indices", "energy.baseline_ttl_s", "energy.thermal_plateau_s"]
    assert "energy.gpu_indices=[0, -1] is invalid" in str(err.value)


def test_zeus_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus", None)
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)
    with pytest.raises(MeterUnavailable, match=r"energy.meter=zeus: .*pip install llem\[zeus\]"):
        build_meters(EnergyConfig(meter="zeus"))


def test_zeus_on_a_host_without_gpu_or_rapl_says_so() -> None:
    pytest.importorskip("zeus.monitor")
    with pytest.raises(MeterUnavailable, match="Zeus found no GPU"):
        build_meters(EnergyConfig(meter="zeus"))


def test_codecarbon_missing_or_bad_country(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="energy.codecarbon.country_iso_code=usa is invalid"):
        build_meters(EnergyConfig(meter="codecarbon", codecarbon=CodeCarbonConfig("usa")))
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    with pytest.raises(MeterUnavailable, match=r"pip install llem\[codecarbon\]"):
        build_meters(EnergyConfig(meter="codecarbon"))


def test_codecarbon_window_is_an_estimate_in_joules() -> None:
    pytest.importorskip("codecarbon")
    (meter,) = build_meters(EnergyConfig(meter="codecarbon",
                                         codecarbon=CodeCarbonConfig("FRA", 0.2))).meters
    meter.start()
    threading.Event().wait(0.5)
    reading = meter.stop()
    meter.close()
    assert reading.measured and reading.details["estimate"] and reading.details["country_iso_code"] == "FRA"
    cpu = next(d for d in reading.devices if d.kind == "cpu")
    assert cpu.estimate and cpu.method == "codecarbon_estimate" and cpu.energy_j > 0
    assert reading.duration_s >= 0.5
    b = energy_block([reading], [], 0.5, 10, 1)
    assert b["estimate"] and any("estimates" in w for w in b["warnings"])


def test_thermal_warmup_runs_until_temperature_settles() -> None:
    clock = {"t": 0.0}
    temp = lambda: {"gpu:0": 80.0 - 40.0 * 2.718281828 ** (-clock["t"] / 20.0)}  # noqa: E731

    def step() -> None:
        clock["t"] += 1.0

    got = thermal_warmup(temp, step, max_s=300, plateau_s=10, tolerance_c=1.0, clock=lambda: clock["t"]).as_dict()
    # rise over the last 10 s = 40·e^(-t/20)·(e^(1/2) - 1) < 1 °C once t > 65.1 s
    assert got["settled"] and got["ran_s"] == 66 and got["steps"] == 66
    assert got["start_c"] == pytest.approx(40.0) and got["end_c"] > 78
    clock["t"] = 0.0
    capped = thermal_warmup(temp, step, max_s=20, plateau_s=10, tolerance_c=1.0, clock=lambda: clock["t"]).as_dict()
    assert not capped["settled"] and capped["ran_s"] == 20 and "limit" in capped["reason"]


def test_thermal_warmup_needs_a_temperature_source() -> None:
    from llem.energy.base import NoMeter

    calls = []
    assert warmup_for([NoMeter()], lambda: calls.append(1), 30, 10, 1).steps == 0 and not calls
    assert warmup_for([NoMeter()], lambda: calls.append(1), 0, 10, 1) is None
