"""llem.device.amd against the AMD simulator (tests/fakes/amd_sim.py, amdsmi 6.x/7.x names behind the `amdsmi`
import): import failure is "no AMD GPU", errors map to llem's kinds, the energy counter unfolds its wrap,
power picks current over average socket power, ROCm's visible-device rules, power caps."""

from __future__ import annotations

import sys

import amd_sim
import pytest
from amd_sim import STATUS, host, install
from gpu_sim import SimClock

from llem.device import (
    AVERAGE,
    INSTANT,
    DeviceLost,
    DeviceNotSupported,
    DevicePermissionError,
    DeviceUnavailable,
    amd,
)
from llem.errors import UserError


@pytest.fixture
def no_visible(monkeypatch):
    for k in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize("error", ["KeyError", "ImportError", "OSError"])
def test_amdsmi_that_raises_at_import_is_no_amd_gpu(tmp_path, monkeypatch, error) -> None:
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    monkeypatch.syspath_prepend(amd_sim.sim_folder(tmp_path, import_error=error))
    with pytest.raises(DeviceUnavailable, match=f"amdsmi cannot be imported \\({error}"):
        amd.open_host()
    from llem.device import vendors

    assert "amd" not in vendors()


def test_amdsmi_init_failure_is_unavailable(monkeypatch) -> None:
    install(monkeypatch, host("MI300X", 2, init_error=STATUS["DRIVER_NOT_LOADED"]))
    with pytest.raises(DeviceUnavailable, match="amdsmi could not start"):
        amd.open_host()


def test_identity_and_vendor_errors_map_to_llem_kinds(monkeypatch, no_visible) -> None:
    sim = install(monkeypatch, host("MI300X", 8, clock=SimClock()))
    sim.gpus[2].unsupported.add("amdsmi_get_gpu_activity")
    sim.gpus[4].open_error = STATUS["NOT_FOUND"]
    with amd.session() as h:
        recs = h.records()
        assert len(recs) == 8 and recs[0].name == "AMD Instinct MI300X" and recs[0].uuid == sim.gpus[0].uuid
        assert recs[1].pci_bus_id == "0000:1c:00.0" and recs[4].error and recs[4].device is None
        g2 = recs[2].device
        with pytest.raises(DeviceNotSupported) as e:
            g2.utilization_pct()
        assert e.value.code == 2 and e.value.vendor == "amd"
        calls = sim.calls["amdsmi_get_gpu_activity"]
        with pytest.raises(DeviceNotSupported):  # remembered: not asked again
            g2.utilization_pct()
        assert sim.calls["amdsmi_get_gpu_activity"] == calls
        with pytest.raises(DevicePermissionError) as perm:  # set_power_cap without root: NO_PERM (10)
            g2.set_power_limit_w(500)
        assert isinstance(perm.value, UserError) and perm.value.code == 10
        sim.gpus[3].open_error = STATUS["NOT_FOUND"]  # falls off the bus later
        with pytest.raises(DeviceLost):
            recs[3].device.temperature_c()
        assert h.count() == 8
    assert sim.initialised == 0  # shut down


def test_energy_counter_is_accumulator_times_resolution_and_unfolds_the_wrap(monkeypatch) -> None:
    clock = SimClock()
    sim = install(monkeypatch, host("MI300X", 1, clock=clock, watts=[500.0]))
    g = sim.gpus[0]
    g.counter_bits = 32
    g.counter_start_ticks = (1 << 32) - 20_000_000  # 305 J before the 32-bit accumulator wraps
    with amd.session() as h:
        dev = h.gpus()[0]
        assert dev.has_energy_counter()
        t0 = clock()
        e0 = dev.energy_counter()
        raws = [dev.energy_counter_raw()]
        for _ in range(40):  # 2 s at 500 W: 1000 J, through the wrap
            clock.advance(0.05)
            raws.append(dev.energy_counter_raw())
            e1 = dev.energy_counter()
        assert min(raws) < raws[0]  # it did wrap
        assert e0.resolution_j == pytest.approx(15.259e-6)
        assert e1.energy_j - e0.energy_j == pytest.approx(sim.true_energy(0, g.last_update(t0), g.last_update(clock())),
                                                          abs=2 * 15.259e-6)
        assert e1.energy_j - e0.energy_j == pytest.approx(1000.0, abs=0.6)  # within one 1 ms update
        assert e1.t_s == pytest.approx(g.last_update(clock()), abs=1e-6)  # the driver's timestamp (ns → s)


def test_power_is_current_socket_power_else_the_average(monkeypatch) -> None:
    clock = SimClock()
    sim = install(monkeypatch, host("MI300X", 1, clock=clock, watts=[300.0]))
    with amd.session() as h:
        dev = h.gpus()[0]
        clock.advance(0.5)
        sim.set_power(0, 700.0)
        assert dev.power_w() == (700.0, INSTANT) and dev.power_source() == "current_socket_power"
        # HOTSPOT (MI300X has no EDGE sensor); amd_sim: 35 °C + 700 W / 20 = 70 °C (an integer: exact)
        assert dev.temperature_c() == 70.0
        assert (dev.sm_clock_mhz(), dev.mem_clock_mhz()) == (2100.0, 1300.0)  # amd_sim's GFX and MEM clocks
    clock = SimClock()
    sim = install(monkeypatch, host("MI250X", 1, clock=clock, watts=[300.0]))
    with amd.session() as h:
        dev = h.gpus()[0]
        clock.advance(2.0)
        sim.set_power(0, 500.0)
        clock.advance(0.5)  # the 1 s average is half-way to the new power
        assert dev.power_source() == "average_socket_power" and dev.power_kind() == AVERAGE
        assert dev.power_w() == (400.0, AVERAGE)


def test_rocm_visible_devices_rules(monkeypatch, no_visible) -> None:
    sim = install(monkeypatch, host("MI300X", 8, clock=SimClock()))
    with amd.session() as h:
        recs = h.records()

        def picked(**env: str) -> list[int]:
            return [v.gpu.nvml_index for v in amd.resolve(recs, env).visible]

        assert picked() == list(range(8))
        assert picked(ROCR_VISIBLE_DEVICES="2,5", HIP_VISIBLE_DEVICES="1") == [5]  # HIP indexes ROCR's list
        assert picked(CUDA_VISIBLE_DEVICES="6,3") == [6, 3]  # HIP's alias when HIP_VISIBLE_DEVICES is unset
        assert picked(CUDA_VISIBLE_DEVICES="6", HIP_VISIBLE_DEVICES="1") == [1]  # HIP_VISIBLE_DEVICES wins
        serial = sim.gpus[7].serial[2:]
        assert picked(ROCR_VISIBLE_DEVICES=f"0,GPU-{serial}") == [0, 7]  # a ROCR UUID
        assert picked(ROCR_VISIBLE_DEVICES=f"GPU-{sim.gpus[4].uuid}") == [4]
        res = amd.resolve(recs, {"HIP_VISIBLE_DEVICES": "1,9,2"})
        assert [v.gpu.nvml_index for v in res.visible] == [1] and "'9'" in res.notes[0]
        res = amd.resolve(recs, {"ROCR_VISIBLE_DEVICES": "3,GPU-ffff"})
        assert [v.cuda_index for v in res.visible] == [0] and "GPU-ffff" in res.notes[0]
        sim_open = amd.resolve(recs, {"ROCR_VISIBLE_DEVICES": "4", "HIP_VISIBLE_DEVICES": "0"})
        assert [v.label for v in sim_open.visible] == ["gpu:0"]


def test_power_caps_in_microwatts(monkeypatch) -> None:
    sim = install(monkeypatch, host("MI300X", 1, clock=SimClock(), root=True))
    with amd.session() as h:
        dev = h.gpus()[0]
        assert dev.power_limit_constraints_w() == (0.0, 750.0) and dev.default_power_limit_w() == 750.0
        dev.set_power_limit_w(450)
        assert sim.gpus[0].cap_uw == 450_000_000 and dev.enforced_power_limit_w() == 450.0
        with pytest.raises(DeviceNotSupported):
            dev.persistence_mode()  # AMD has no persistence mode


def test_launcher_health_reads_amd_gpus_where_nvml_is_absent(monkeypatch, no_visible) -> None:
    from llem.launch import health

    monkeypatch.setitem(sys.modules, "pynvml", None)
    sim = install(monkeypatch, host("MI300X", 4, clock=SimClock()))
    sim.gpus[1].pids = [4242]
    report = health.check(["1", "2"], 1024, True, own_pids=set())
    assert report["checked"] and report["gpus"][0]["uuid"] == sim.gpus[1].uuid
    assert report["problems"] == ["GPU 1: 4396 MiB in use before the job (threshold hydra.launcher.health_max_memory_used_mib=1024)",
                                  "GPU 1: foreign process(es) 4242 running"]
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # neither library: recorded, not fatal
    report = health.check(None, 1024, True, own_pids=set())
    assert not report["checked"] and report["reason"].startswith("NVML unavailable")


def test_gpu_session_opens_whichever_vendor_answers(monkeypatch, no_visible) -> None:
    from llem.device import gpu_session

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    with pytest.raises(DeviceUnavailable, match="NVML bindings missing.*amdsmi cannot be imported"), gpu_session():
        pass
    sim = install(monkeypatch, host("MI300X", 2, clock=SimClock()))
    with gpu_session() as h:
        assert h.vendor == "amd" and [v.gpu.uuid for v in h.resolve_job({"HIP_VISIBLE_DEVICES": "1"}).visible] == [
            sim.gpus[1].uuid]
    assert sim.initialised == 0
