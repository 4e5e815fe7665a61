"""Whole-node power from the BMC (llem/energy/meters/node): Redfish against sushy-tools' sushy-static
and a 401-answering server, IPMI DCMI against a pyghmi BMC, all real servers on 127.0.0.1 started here;
the pure parts (integration, DCMI parsing, checks, the result's breakdown and basis) as unit tests."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_llem
from node_bmc import (
    RedfishMockup,
    free_port,
    ipmi_bmc,
    redfish_with_auth,
    self_signed,
    silent_bmc,
    sushy_static,
)

from llem.config.schema import EnergyConfig, NodeConfig
from llem.energy import build_meters
from llem.energy.base import DeviceEnergy, EnergyReading, MeterUnavailable
from llem.energy.block import energy_block
from llem.energy.meters.node import make_node_meter, problems, summarise
from llem.energy.meters.node.breakdown import node_figures, pick_basis
from llem.energy.meters.node.ipmi import parse_power_reading
from llem.errors import ConfigError
from llem.measure.latency import SteadyState

PASSWORD = "Pa55-w0rd-never-written"
USER = "llem-admin"


def energy_cfg(source: str, address: str | None, **node: Any) -> EnergyConfig:
    return EnergyConfig(meter="none", baseline_s=0.0, node=NodeConfig(source=source, address=address, **node))


# -- unit: integration, parsing, checks ------------------------------------------------------------------

def test_summarise_integrates_trapezoid_over_the_readings_and_keeps_the_counter() -> None:
    rows = [{"t_s": 10.0, "power_w": 100.0, "counter_j": 0.0}, {"t_s": 11.0, "power_w": 300.0, "counter_j": 3600.0},
            {"t_s": 13.0, "power_w": 300.0, "counter_j": 3600.0}, {"t_s": 13.5, "power_w": None, "counter_j": None}]
    r = summarise(rows, "redfish", {"address": "http://x"}, 1.0, 10.0)
    d = r.devices[0]
    # 0.5*(100+300)*1 + 300*2 = 800 J over the 3 s the power readings cover (the last read failed)
    assert (d.kind, d.energy_j, d.method) == ("node", pytest.approx(800.0), "redfish_power_integral")
    assert d.extra["mean_power_w"] == pytest.approx(800.0 / 3.0) and d.extra["samples"] == 3
    assert d.extra["counter_j"] == 3600.0 and d.extra["counter_step_j"] == 3600.0
    assert [x["energy_j"] for x in r.timeseries] == pytest.approx([0.0, 200.0, 800.0])
    assert any("cover 3.000 s of the 3.500 s" in w for w in r.warnings)
    assert r.sampling.sample_hz == 1.0 and r.sampled is True


def test_summarise_clips_the_readings_to_the_meters_span() -> None:
    rows = [{"t_s": 9.0, "power_w": 100.0}, {"t_s": 11.0, "power_w": 300.0}, {"t_s": 13.0, "power_w": 300.0}]
    d = summarise(rows, "ipmi", {}, 1.0, 9.0, span=(10.0, 12.0)).devices[0]
    # cumulative trapezoid 0, 400, 1000 J at 9, 11, 13 s, read linearly at 10 s (200) and 12 s (700)
    assert d.energy_j == pytest.approx(500.0) and d.extra["mean_power_w"] == pytest.approx(250.0)
    assert d.extra["readings_integral_j"] == pytest.approx(1000.0) and d.extra["span_s"] == 2.0
    late = summarise(rows, "ipmi", {}, 1.0, 9.0, span=(8.0, 12.0))  # the first read came after the start
    assert late.devices[0].energy_j == pytest.approx(700.0) and "cover 3.000 s of the 4.000 s" in late.warnings[0]


def test_summarise_with_fewer_than_two_readings_is_not_measured() -> None:
    r = summarise([{"t_s": 1.0, "power_w": 5.0}], "ipmi", {}, 1.0, 1.0, errors=3, first_error="boom")
    assert not r.measured and "fewer than two" in r.reason and "3 BMC read(s) failed" in r.warnings[0]


def test_iso_durations_as_redfish_writes_them() -> None:
    from llem.energy.meters.node.redfish import iso_seconds

    assert [iso_seconds(x) for x in ("PT1S", "PT0.5S", "PT1M30S", "P1DT1H", "", None, "1s")] == \
        [1.0, 0.5, 90.0, 90000.0, None, None, None]


def test_dcmi_power_reading_parses_current_min_max_average_period_and_state() -> None:
    import struct

    body = struct.pack("<BHHHHIIB", 0xDC, 431, 400, 512, 455, 1_700_000_000, 1000, 0x40)
    got = parse_power_reading(body)
    assert (got["power_w"], got["min_w"], got["max_w"], got["average_w"]) == (431.0, 400.0, 512.0, 455.0)
    assert got["bmc_period_s"] == 1.0 and got["bmc_timestamp_s"] == 1_700_000_000
    inactive = parse_power_reading(body[:-1] + b"\x00")
    assert inactive["power_w"] is None and inactive["average_w"] == 455.0
    with pytest.raises(ValueError):
        parse_power_reading(b"\xdc\x01\x00")


@pytest.mark.parametrize(("change", "key"), [
    ({"source": "snmp"}, "energy.node.source"),
    ({"source": "redfish"}, "energy.node.address"),
    ({"source": "redfish", "address": "bmc-host"}, "energy.node.address"),
    ({"source": "ipmi", "address": "https://bmc", "password_env": "P"}, "energy.node.address"),
    ({"source": "ipmi", "address": "10.0.0.9"}, "energy.node.password_env"),
    ({"source": "redfish", "address": "https://root:calvin@bmc"}, "energy.node.address"),
    ({"sample_s": 0.0}, "energy.node.sample_s"),
    ({"timeout_s": -1}, "energy.node.timeout_s"),
    ({"port": 70000}, "energy.node.port"),
    ({"password_env": "hunter2 with spaces"}, "energy.node.password_env"),
])
def test_bad_node_settings_name_the_key(change: dict[str, Any], key: str) -> None:
    cfg = EnergyConfig(node=NodeConfig(**change))
    assert [p[0] for p in problems(cfg)] == [key]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_meters(cfg)


def test_credentials_in_the_address_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as e:
        build_meters(EnergyConfig(node=NodeConfig(source="redfish", address="https://root:calvin@bmc")))
    assert "calvin" not in str(e.value) and "energy.node.address" in str(e.value)


def test_basis_node_needs_a_node_source_and_unknown_basis_is_refused() -> None:
    assert [p[0] for p in problems(EnergyConfig(basis="node"))] == ["energy.basis"]
    assert [p[0] for p in problems(EnergyConfig(basis="wall"))] == ["energy.basis"]
    assert problems(EnergyConfig(basis="node", node=NodeConfig(source="ipmi", address="h", password_env="P"))) == []


def test_default_config_hash_is_unchanged_by_the_node_knobs() -> None:
    from llem.study.hashing import config_hash

    base = {"backend": "pytorch", "n": 4, "energy": {"meter": "auto", "sample_hz": 10.0}}
    with_defaults = {**base, "energy": {**base["energy"], "basis": "auto", "node": {"source": "none", "address": None}}}
    asked = {**base, "energy": {**base["energy"], "basis": "auto", "node": {"source": "redfish", "address": "https://b"}}}
    assert config_hash(with_defaults) == config_hash(base) != config_hash(asked)


def _reading(meter: str, device: str, kind: str, energy_j: float, t0: float = 0.0, t1: float = 2.0) -> EnergyReading:
    series = [{"t_s": t0, "device": device, "kind": kind, "energy_j": 0.0},
              {"t_s": t1, "device": device, "kind": kind, "energy_j": energy_j}]
    return EnergyReading(meter=meter, measured=True, duration_s=t1 - t0, timeseries=series,
                         devices=[DeviceEnergy(device, kind, energy_j, f"{meter}_x", {"duration_s": t1 - t0})],
                         update_period_s=1.0 if meter == "node" else None)


def test_energy_block_reports_node_beside_gpu_and_cpu_with_the_rest() -> None:
    readings = [_reading("nvml", "gpu:0", "gpu", 300.0), _reading("rapl", "cpu:package-0", "cpu", 100.0),
                _reading("node", "node", "node", 1000.0)]
    b = energy_block(readings, [], 2.0, output_tokens=50, requests=5)
    assert (b["gpu_j"], b["cpu_j"], b["node_j"]) == (300.0, 100.0, 1000.0)
    assert b["measured_total_j"] == 400.0  # node never summed with its parts
    assert b["node_mean_power_w"] == 500.0
    assert b["node"]["breakdown"]["rest_j"] == 600.0 and b["node"]["breakdown"]["rest_parts_subtracted"] == ["gpu", "cpu"]
    assert b["basis"] == "gpu" and b["j_per_output_token"] == 6.0
    n = energy_block(readings, [], 2.0, output_tokens=50, requests=5, basis="node",
                     steady_state=SteadyState(t_start=0.0, t_end=1.0, output_tokens=10, requests=1))
    assert n["basis"] == "node" and n["j_per_output_token"] == 20.0 and n["j_per_request"] == 200.0
    assert n["steady_state"]["node_j"] == pytest.approx(500.0) and n["steady_state"]["j_per_output_token"] == 50.0
    assert not [w for w in n["warnings"] if "sensors disagree" in w]


def test_negative_rest_warns_that_the_sensors_disagree() -> None:
    readings = [_reading("nvml", "gpu:0", "gpu", 900.0), _reading("node", "node", "node", 800.0)]
    b = energy_block(readings, [], 2.0, output_tokens=10, requests=1)
    assert b["node"]["breakdown"]["rest_j"] == -100.0
    assert any("sensors disagree" in w for w in b["warnings"])


def test_auto_basis_falls_back_to_node_and_an_unmeasured_explicit_basis_gives_none() -> None:
    assert pick_basis("auto", {"gpu_j": None, "cpu_j": None, "node_j": 5.0}) == "node"
    assert pick_basis("auto", {"gpu_j": None, "cpu_j": 2.0, "node_j": 5.0}) == "cpu"
    assert pick_basis("gpu", {"gpu_j": None, "cpu_j": 2.0, "node_j": 5.0}) is None
    assert node_figures([], {}, 1.0)[0] == {"node_j": None, "node_mean_power_w": None}


def test_no_node_source_adds_no_meter() -> None:
    assert make_node_meter(EnergyConfig()) is None
    assert [m.name for m in build_meters(EnergyConfig(meter="none")).meters] == ["none"]


# -- Redfish against real servers ---------------------------------------------------------------------------

class Profile:
    """Plays a known step profile into a BMC (set(power_w)) and remembers when each step began."""

    def __init__(self, set_power: Any, steps_w: list[float], dwell_s: float) -> None:
        self.set_power, self.steps_w, self.dwell_s = set_power, steps_w, dwell_s
        self.switches: list[tuple[float, float]] = []

    def play(self) -> None:
        for p in self.steps_w:
            self.set_power(p)
            self.switches.append((time.perf_counter(), p))
            time.sleep(self.dwell_s)

    def energy(self, t0: float, t1: float, initial_w: float) -> float:
        """∫ P dt over [t0, t1] of the step function the BMC served."""
        points = [(-1e18, initial_w), *self.switches, (1e18, self.switches[-1][1])]
        total = 0.0
        for (a, p), (b, _) in zip(points, points[1:]):
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                total += p * (hi - lo)
        return total

    def bound(self, times: list[float], initial_w: float, slack_s: float = 0.03) -> float:
        """Largest trapezoid error the sampling allows: per step, |ΔP| × (half the gap around it + slack)."""
        out, prev = 0.0, initial_w
        for ts, p in self.switches:
            gap = next((b - a for a, b in zip(times, times[1:]) if a <= ts < b), 0.0)
            out += abs(p - prev) * (gap / 2 + slack_s)
            prev = p
        return out


def _measure(meter: Any, profile: Profile) -> EnergyReading:
    meter.start()
    player = threading.Thread(target=profile.play)
    player.start()
    player.join()
    time.sleep(profile.dwell_s / 2)
    return meter.stop()


def _check_integral(reading: EnergyReading, profile: Profile, initial_w: float) -> float:
    d = reading.devices[0]
    times = [r["t_s"] for r in reading.timeseries]
    true_j = profile.energy(d.extra["span_start_s"], d.extra["span_end_s"], initial_w)
    assert times[0] <= d.extra["span_start_s"] < d.extra["span_end_s"] <= times[-1]  # the readings bracket it
    err = d.energy_j - true_j
    assert abs(err) <= profile.bound(times, initial_w), (d.energy_j, true_j, times)
    return err / true_j


@pytest.mark.slow
@pytest.mark.parametrize("style", ["environment", "legacy"])
def test_redfish_integral_follows_a_changing_reading(tmp_path: Path, style: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    mock = RedfishMockup(tmp_path / "mockup", style=style, power_w=200.0)
    with sushy_static(mock.root) as address:
        meter = make_node_meter(energy_cfg("redfish", address, sample_s=0.1, chassis=None))
        meter.probe()
        assert meter.client.chassis_id == "1U"  # the enclosure listed first has no power resource
        assert meter.client.resource.endswith("/EnvironmentMetrics" if style == "environment" else "/Power")
        profile = Profile(mock.set_power, [450.0, 300.0, 600.0, 250.0], dwell_s=0.6)
        reading = _measure(meter, profile)
        meter.close()
    _check_integral(reading, profile, 200.0)
    d = reading.devices[0]
    assert d.extra["samples"] >= 15 and d.extra["chassis"] == "1U"
    if style == "environment":
        assert d.extra["reading"] == "EnvironmentMetrics.PowerWatts.Reading" and d.extra["counter_j"] == 0.0
        assert d.extra["bmc_sensing_interval_s"] == 0.5  # the PowerWatts sensor's SensingInterval
    else:
        assert d.extra["reading"] == "Power.PowerControl[].PowerConsumedWatts" and d.extra["counter_j"] is None


@pytest.mark.slow
def test_a_slow_bmc_does_not_widen_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.measure.window import MeasurementWindow

    monkeypatch.setenv("BMC_USER", USER)
    monkeypatch.setenv("BMC_PASS", PASSWORD)
    mock = RedfishMockup(tmp_path / "m", style="environment", power_w=400.0)
    with redfish_with_auth(mock.root, USER, PASSWORD, delay_s=0.25) as address:
        sel = build_meters(energy_cfg("redfish", address, sample_s=0.5, username_env="BMC_USER",
                                      password_env="BMC_PASS"))
        with MeasurementWindow(sel.meters) as w:
            time.sleep(1.0)
        sel.meters[-1].close()
    (reading,) = [r for r in w.readings if r.meter == "node"]
    d = reading.devices[0]
    times = [r["t_s"] for r in reading.timeseries]
    assert times[-1] - times[0] > w.duration_s + 0.2  # each edge read took 0.25 s, outside the window
    assert d.extra["span_start_s"] <= w.t_start and d.extra["span_end_s"] >= w.t_end
    assert d.energy_j == pytest.approx(400.0 * d.extra["span_s"]) and d.extra["mean_power_w"] == pytest.approx(400.0)
    assert d.extra["span_s"] == pytest.approx(w.duration_s, abs=0.05)  # the window, not the 0.25 s reads around it


@pytest.mark.slow
def test_redfish_counter_is_recorded_beside_the_integral(tmp_path: Path) -> None:
    mock = RedfishMockup(tmp_path / "m", style="environment", power_w=3600.0, energy_kwh=10.0)
    with sushy_static(mock.root) as address:
        meter = make_node_meter(energy_cfg("redfish", address, sample_s=0.1))
        meter.start()
        time.sleep(0.35)
        mock.set_power(3600.0, energy_kwh=10.001)  # the BMC's counter steps by 1 Wh = 3600 J
        time.sleep(0.35)
        r = meter.stop()
        meter.close()
    assert r.devices[0].extra["counter_j"] == pytest.approx(3600.0)
    assert r.devices[0].extra["counter_step_j"] == pytest.approx(3600.0)


@pytest.mark.slow
def test_redfish_bad_bmcs_stop_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_USER", USER)
    monkeypatch.setenv("BMC_PASS", PASSWORD)
    creds = {"username_env": "BMC_USER", "password_env": "BMC_PASS", "timeout_s": 0.5}
    good = RedfishMockup(tmp_path / "good", style="legacy")
    with redfish_with_auth(good.root, USER, PASSWORD) as address:
        ok = build_meters(energy_cfg("redfish", address, **creds))
        assert [m.name for m in ok.meters] == ["none", "node"] and "chassis=1U" in ok.notes[-1]
        ok.meters[-1].close()
        monkeypatch.setenv("BMC_PASS", "wrong")
        with pytest.raises(MeterUnavailable, match=r"^energy\.node\.source=redfish: .*answered 401.*BMC_PASS"):
            build_meters(energy_cfg("redfish", address, **creds))
        monkeypatch.delenv("BMC_PASS")
        with pytest.raises(MeterUnavailable, match="environment variable BMC_PASS is not set"):
            build_meters(energy_cfg("redfish", address, **creds))
    with silent_bmc() as address, pytest.raises(MeterUnavailable, match="no answer within energy.node.timeout_s=0.5"):
        build_meters(energy_cfg("redfish", address, timeout_s=0.5))
    with pytest.raises(MeterUnavailable, match="unreachable"):
        build_meters(energy_cfg("redfish", f"http://127.0.0.1:{free_port()}"))
    empty = RedfishMockup(tmp_path / "empty", style="none")
    with sushy_static(empty.root) as address:
        with pytest.raises(MeterUnavailable, match="no chassis reports power .*EnvironmentMetrics.*Power"):
            build_meters(energy_cfg("redfish", address))
        with pytest.raises(MeterUnavailable, match="energy.node.chassis=GPU: no such chassis"):
            build_meters(energy_cfg("redfish", address, chassis="GPU"))


@pytest.mark.slow
def test_redfish_over_https_checks_the_certificate_unless_told_not_to(tmp_path: Path) -> None:
    mock = RedfishMockup(tmp_path / "m", style="legacy", power_w=275.0)
    with sushy_static(mock.root, tls=self_signed(tmp_path / "tls")) as address:
        assert address.startswith("https://")
        with pytest.raises(MeterUnavailable, match="TLS failed .*certificate verify failed.*verify_tls=false"):
            build_meters(energy_cfg("redfish", address))
        sel = build_meters(energy_cfg("redfish", address, verify_tls=False))
        assert sel.meters[-1].client.read()["power_w"] == 275.0
        sel.meters[-1].close()


def test_serving_per_request_energy_follows_the_node_basis() -> None:
    from llem.serving.attribution import energy_function

    readings = [_reading("nvml", "gpu:0", "gpu", 300.0), _reading("node", "node", "node", 1000.0)]
    at, source = energy_function(readings, "node", 0.0, 2.0, 1000.0)
    assert source == "timeseries" and at(1.0) == pytest.approx(500.0) and at(2.0) == 1000.0


# -- IPMI against pyghmi's BMC ----------------------------------------------------------------------------

@pytest.mark.slow
def test_ipmi_dcmi_integral_follows_a_changing_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPMI_USER", USER[:16])
    monkeypatch.setenv("IPMI_PASS", PASSWORD)
    with ipmi_bmc(tmp_path, USER[:16], PASSWORD, power_w=250.0) as (port, power):
        cfg = energy_cfg("ipmi", "127.0.0.1", port=port, username_env="IPMI_USER", password_env="IPMI_PASS",
                         sample_s=0.1)
        sel = build_meters(cfg)
        meter = sel.meters[-1]
        profile = Profile(lambda w: power.set(w, average_w=333.0), [500.0, 350.0, 650.0, 150.0], dwell_s=0.6)
        reading = _measure(meter, profile)
        meter.close()
        monkeypatch.setenv("IPMI_PASS", "wrong")
        with pytest.raises(MeterUnavailable, match=r"^energy\.node\.source=ipmi: .*refused the login.*IPMI_PASS"):
            build_meters(cfg)
        monkeypatch.setenv("IPMI_PASS", PASSWORD)
        power.set(100.0, inactive=True)
        with pytest.raises(MeterUnavailable, match="reports no power reading"):
            build_meters(cfg)
    _check_integral(reading, profile, 250.0)
    d = reading.devices[0]
    assert d.method == "ipmi_power_integral" and d.extra["bmc_average_w"] == 333.0 and d.extra["bmc_period_s"] == 1.0


def test_ipmi_without_pyghmi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyghmi", None)
    monkeypatch.setitem(sys.modules, "pyghmi.ipmi", None)
    monkeypatch.setenv("P", "x")
    with pytest.raises(MeterUnavailable, match=r"pip install 'llem\[node\]'"):
        build_meters(energy_cfg("ipmi", "127.0.0.1", password_env="P"))


# -- the whole job -------------------------------------------------------------------------------------------

SMALL = ["n=4", "pytorch.max_output_tokens=6", "warmup.n_batches=1", "dataset.input_tokens=16", "energy.baseline_s=0"]


@pytest.mark.slow
def test_job_measures_node_energy_and_never_writes_the_password(tmp_path: Path, llem_cache: Path) -> None:
    mock = RedfishMockup(tmp_path / "mockup", style="environment", power_w=512.0)
    env = {"BMC_USER": USER, "BMC_PASS": PASSWORD}
    (tmp_path / "bad").mkdir()
    with redfish_with_auth(mock.root, USER, PASSWORD) as address:
        proc = run_llem(["-m", *SMALL, "energy.node.source=redfish", f"energy.node.address={address}",
                         "energy.node.username_env=BMC_USER", "energy.node.password_env=BMC_PASS",
                         "energy.node.sample_s=0.1", "energy.basis=node"], tmp_path, llem_cache, env=env)
        assert proc.returncode == 0, proc.stderr
        bad = run_llem([*SMALL, "energy.node.source=redfish", f"energy.node.address={address}",
                        "energy.node.username_env=BMC_USER", "energy.node.password_env=BMC_PASS"],
                       tmp_path / "bad", llem_cache, env={**env, "BMC_PASS": "nope", "HYDRA_FULL_ERROR": "0"})
    (folder,) = [p.parent for p in tmp_path.glob("multirun/**/result.json")]
    assert list(tmp_path.glob("multirun/**/plan.json")) and list(tmp_path.glob("multirun/**/manifest.json"))
    r = json.loads((folder / "result.json").read_text())
    e = r["energy"]
    assert e["basis"] == "node" and e["node_mean_power_w"] == pytest.approx(512.0)
    assert e["node_j"] == pytest.approx(512.0 * e["node"]["breakdown"]["node_j"] / 512.0)
    assert e["j_per_output_token"] == pytest.approx(e["node_j"] / r["workload"]["output_tokens"])
    assert e["node"]["source"] == "redfish" and e["node"]["sample_s"] == 0.1 and e["node"]["chassis"] == "1U"
    assert e["node"]["breakdown"]["rest_j"] == e["node_j"]  # nothing else measured on this host
    # the password is nowhere: result, logs, Hydra's config copies, timeseries, the study's plan/manifest/locks
    for f in tmp_path.rglob("*"):
        if f.is_file() and "mockup" not in f.parts:
            assert PASSWORD.encode() not in f.read_bytes(), f
    assert PASSWORD not in proc.stdout + proc.stderr
    assert bad.returncode == 2, bad.stderr
    lines = [x for x in bad.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("llem: energy.node.source=redfish:") and "401" in lines[0]
    assert "nope" not in bad.stderr and PASSWORD not in bad.stderr
    assert not list((tmp_path / "bad").glob("outputs/*/*/timeseries*"))  # stopped before the model loaded


@pytest.mark.slow
def test_node_meter_runs_beside_the_gpu_meter_in_one_window(tmp_path: Path, nvml_sim: Any) -> None:
    from gpu_sim import host

    from llem.measure.window import MeasurementWindow

    nvml_sim(host("H100", 1, watts=[300.0]))
    mock = RedfishMockup(tmp_path / "m", style="environment", power_w=700.0)
    with sushy_static(mock.root) as address:
        cfg = energy_cfg("redfish", address, sample_s=0.1)
        cfg.meter, cfg.rapl.root = "auto", str(tmp_path / "no-rapl")
        sel = build_meters(cfg)
        assert [m.name for m in sel.meters] == ["nvml", "node"]
        with MeasurementWindow(sel.meters) as w:
            time.sleep(0.8)
        mock.set_power(250.0)  # a BMC reading below the GPU's: the sensors disagree
        with MeasurementWindow(sel.meters) as w2:
            time.sleep(0.8)
        for m in sel.meters:
            m.close()
    b = energy_block(w.readings, sel.notes, w.duration_s, output_tokens=10, requests=1)
    assert b["gpu_j"] == pytest.approx(300.0 * w.duration_s, rel=0.05)
    assert b["node_j"] == pytest.approx(700.0 * w.duration_s, rel=0.05)
    rest = b["node"]["breakdown"]
    assert rest["rest_parts_subtracted"] == ["gpu"] and rest["rest_j"] == pytest.approx(b["node_j"] - b["gpu_j"])
    assert rest["rest_mean_power_w"] == pytest.approx(400.0, rel=0.05)
    assert b["basis"] == "gpu" and b["measured_total_j"] == b["gpu_j"]
    b2 = energy_block(w2.readings, sel.notes, w2.duration_s, output_tokens=10, requests=1, basis="node")
    assert b2["node"]["breakdown"]["rest_j"] < 0 and any("sensors disagree" in x for x in b2["warnings"])
    assert b2["j_per_output_token"] == pytest.approx(b2["node_j"] / 10)
