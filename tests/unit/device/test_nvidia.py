"""llem.device.nvidia against the GPU simulator (tests/fakes/gpu_sim.py behind the `pynvml` import): the
abstract GPU's reads and settings on NVIDIA, NVML errors mapped to llem's kinds in one place."""

from __future__ import annotations

import dataclasses

import pytest
from gpu_sim import MODELS, SimClock, add_migs, gpu_uuid, host

from llem.device import (
    AVERAGE,
    INSTANT,
    DeviceLost,
    DeviceNotSupported,
    DevicePermissionError,
    DeviceUnavailable,
    nvidia_session,
)
from llem.errors import UserError


def test_reads_through_the_abstract_gpu(nvml_sim) -> None:
    clock = SimClock()
    sim = nvml_sim(host(["H100", "A100", "P100"], clock=clock, watts=[300.0, 200.0, 100.0]))
    with nvidia_session() as h:
        h100, a100, p100 = h.gpus()
        assert (h100.vendor, h100.index, h100.uuid) == ("nvidia", 0, gpu_uuid(0)) and "H100" in h100.name
        c0 = h100.energy_counter()
        clock.advance(1.0)
        c1 = h100.energy_counter()
        assert c1.energy_j - c0.energy_j == pytest.approx(300.0, abs=0.5) and c1.resolution_j == 1e-3
        assert h100.energy_counter_raw() == int(round(c1.energy_j * 1000))
        assert h100.power_w() == (300.0, INSTANT) and h100.power_source() == "power_instant_field"
        assert a100.power_kind() == INSTANT and p100.has_energy_counter() is False
        with pytest.raises(DeviceNotSupported):
            p100.energy_counter()
        # gpu_sim: 32 °C ambient + 0.1 °C/W × 300 W (steady: the power never changed); clocks at the top
        # supported SM (1980) and memory (2619) MHz. Exact: the sim returns integers.
        assert (h100.temperature_c(), h100.sm_clock_mhz(), h100.mem_clock_mhz()) == (62, 1980, 2619)
        used, total = h100.memory_info()
        assert 0 <= used <= total == h100.memory_total_bytes()
        assert isinstance(h100.clock_event_reasons(), list)
    assert sim.shutdowns == 1


def test_an_averaged_power_usage_is_said_to_be_an_average(nvml_sim) -> None:
    sim = nvml_sim(host("A10", clock=SimClock(), watts=[150.0]))
    sim.gpus[0].model = dataclasses.replace(MODELS["A10"], power_instant_field=False)  # a driver without the field
    with nvidia_session() as h:
        (dev,) = h.gpus()
        assert dev.power_source() == "power_usage_1s_average" and dev.power_kind() == AVERAGE
        assert dev.power_w().kind == AVERAGE
    assert sim


def test_settings_api_and_permissions(nvml_sim) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock(), admin=True))
    with nvidia_session() as h:
        dev = h.gpus()[0]
        lo, hi = dev.power_limit_constraints_w()
        assert lo < hi and dev.default_power_limit_w() == dev.power_limit_w() == dev.enforced_power_limit_w()
        dev.set_power_limit_w(lo + 100)
        assert dev.power_limit_w() == pytest.approx(lo + 100) and sim.gpus[0].power_limit_mw == int((lo + 100) * 1000)
        mems = dev.supported_mem_clocks_mhz()
        sms = dev.supported_sm_clocks_mhz()
        assert mems == sorted(mems, reverse=True) and sms == sorted(sms, reverse=True)
        dev.set_locked_sm_clocks_mhz(sms[-1], sms[0])
        assert sim.gpus[0].locked_sm == (sms[-1], sms[0])
        dev.reset_locked_sm_clocks()
        assert sim.gpus[0].locked_sm is None
        dev.set_locked_mem_clocks_mhz(mems[-1], mems[-1])
        dev.reset_locked_mem_clocks()
        dev.set_persistence_mode(True)
        assert dev.persistence_mode() is True
        dev.set_persistence_mode(False)
        dev.set_power_limit_w(dev.default_power_limit_w())
    nvml_sim(host("H100", 1, clock=SimClock()))  # not root
    with nvidia_session() as h:
        with pytest.raises(DevicePermissionError) as e:
            h.gpus()[0].set_power_limit_w(300)
        assert isinstance(e.value, UserError) and e.value.code == 4 and "NoPermission" in e.value.detail


def test_nvml_errors_map_to_llem_kinds(nvml_sim) -> None:
    sim = nvml_sim(host("H100", 2, clock=SimClock()))
    with nvidia_session() as h:
        dev = h.gpus()[1]
        sim.gpus[1].lost_at = sim.clock()  # falls off the bus after opening
        with pytest.raises(DeviceLost):
            dev.energy_counter()
        (mig,) = add_migs(sim, 0, 1)
        res = h.resolve(mig.uuid, "PCI_BUS_ID")
        (v,) = res.visible
        assert v.target.uuid == mig.uuid and "MIG" in v.target.name  # a MIG instance: its own processes
        with pytest.raises(DeviceNotSupported):
            v.target.energy_counter()  # NVML has no per-instance energy


def test_no_nvml_is_unavailable(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(DeviceUnavailable, match="NVML bindings missing"), nvidia_session():
        pass
