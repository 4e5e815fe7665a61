"""llem/energy/gpu_window.py: a GPU's samples to its energy, on hand-made samples with known answers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llem.energy.gpu_window import summarise, tick_curve


def row(t: float, counter_mj: int | None, power_w: float | None = None, temp: float | None = None,
        reasons: int | None = 0) -> dict:
    return {"t_s": t, "counter_mj": counter_mj, "power_w": power_w, "temperature_c": temp,
            "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "gpu_util_pct": 100, "mem_util_pct": 50,
            "memory_used_bytes": 1 << 30, "clock_event_reasons": reasons}


def test_readings_land_on_the_last_tick_before_them() -> None:
    # counter ticks every 0.1 s from the start anchor; a reading at 0.15 s shows the 0.1 s tick's value
    rows = [row(0.15, 1_100), row(0.25, 1_200), row(0.37, 1_300)]
    times, joules = tick_curve(rows, (0.0, 1_000), (0.5, 1_500), 0.1)
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.5])
    assert joules == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.5])  # mJ -> J from the first point


def test_the_tick_period_is_refitted_to_the_end_anchor() -> None:
    # anchors 0.98 s apart at a probed 0.1 s step: 10 ticks (9.8 rounded), so the period is 0.098 s
    rows = [row(0.95, 10_900)]  # 0.95 / 0.098 = 9.69 ticks: placed at tick 9 = 0.882 s
    times, _ = tick_curve(rows, (0.0, 10_000), (0.98, 11_000), 0.1)
    assert times == pytest.approx([0.0, 0.882, 0.98])


def test_a_value_placed_a_tick_too_late_is_dropped_and_none_without_two_points() -> None:
    # a lower value after a higher one (placed a tick too late) is dropped: one point left, no curve
    assert tick_curve([row(0.1, 1_300), row(0.12, 1_200)], None, None, None) is None
    # two readings on one tick keep the higher value
    times, joules = tick_curve([row(0.11, 1_100), row(0.13, 1_150), row(0.25, 1_300)], (0.0, 1_000), None, 0.1)
    assert times == pytest.approx([0.0, 0.1, 0.2]) and joules == pytest.approx([0.0, 0.15, 0.3])
    assert tick_curve([row(0.1, 5)], None, None, None) is None
    assert tick_curve([row(0.1, None), row(0.2, None)], None, None, None) is None


def gpu(step_s: float | None = 0.1) -> SimpleNamespace:
    names = {1: ["sw_power_cap"], 2: ["gpu_idle"], 0: []}
    return SimpleNamespace(
        counter_step_s=step_s, dev=SimpleNamespace(reason_names=lambda bits: names.get(bits or 0, [])),
        device="gpu:0", uuid="GPU-x", name="H100", nvml_index=0, visible=[SimpleNamespace(cuda_index=0)],
        migs=[], power_source="instant", read_errors=0, power_limit_w=700.0, persistence_mode=True)


def test_summary_of_a_gpu_at_a_known_power() -> None:
    # 300 W for 1 s: the counter advances 30,000 mJ per 0.1 s tick; the power-cap bit is set for the first
    # 0.4 s; the temperature climbs from 40 to 46 °C
    rows = [row(0.1 * i, 100_000 + 30_000 * i, 300.0, 40.0 + 0.6 * i, 1 if i < 4 else 0) for i in range(11)]
    energy, series, facts, curve, thermal = summarise(gpu(), rows, 0.0, ((0.0, 100_000), (1.0, 400_000)))
    assert energy == pytest.approx(300.0)  # J: counter, between the first and last sample
    assert facts["method"] == "nvml_counter" and facts["counter_j"] == pytest.approx(300.0)
    assert facts["integral_j"] == pytest.approx(300.0) and facts["integral_vs_counter_pct"] == pytest.approx(0.0)
    assert facts["mean_power_w"] == pytest.approx(300.0) and facts["samples"] == 11
    assert facts["sample_interval_s"] == pytest.approx(0.1) and facts["duration_s"] == pytest.approx(1.0)
    assert series[5]["energy_j"] == pytest.approx(150.0) and series[5]["elapsed_s"] == pytest.approx(0.5)
    assert series[0]["throttle"] == "sw_power_cap" and series[4]["throttle"] is None
    assert thermal.throttle_s == {"sw_power_cap": pytest.approx(0.4)}  # 4 intervals start with the bit set
    assert (thermal.temperature_start_c, thermal.temperature_max_c) == (40.0, pytest.approx(46.0))
    assert thermal.temperature_drift_c == pytest.approx(6.0)
    assert curve["energy_j"][-1] == pytest.approx(300.0)


def test_without_a_counter_the_power_integral_is_the_energy() -> None:
    rows = [row(0.5 * i, None, 100.0 + 100.0 * i) for i in range(3)]  # 100, 200, 300 W at 0, 0.5, 1 s
    energy, series, facts, _, _ = summarise(gpu(None), rows, 0.0, (None, None), meter="amdsmi")
    assert energy == pytest.approx(200.0)  # trapezoid: 0.5 × (150 + 250)
    assert facts["method"] == "amdsmi_power_integral" and facts["counter_j"] is None
    assert series[1]["energy_j"] == pytest.approx(75.0)


def test_a_counter_that_went_backwards_falls_back_to_the_integral() -> None:
    # driver reload mid-window: the counter restarted, so it says nothing about this window
    rows = [row(0.0, 900_000, 200.0), row(0.5, 950_000, 200.0), row(1.0, 10_000, 200.0)]
    energy, _, facts, _, _ = summarise(gpu(), rows, 0.0, (None, None))
    assert facts["counter_j"] is None and facts["counter_uncorrected_j"] == pytest.approx(-890.0)
    assert energy == pytest.approx(200.0) and facts["method"] == "nvml_power_integral"
