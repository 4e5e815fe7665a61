"""Per-phase energy from the sampled cumulative energy at the phase boundaries of the measured pass."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llem.energy.base import DeviceEnergy, EnergyReading, Sampling
from llem.energy.block import energy_block
from llem.energy.phases import energy_in_span, phase_energy, timeline
from llem.measure.latency import Phase, SteadyState


def reading_from_power(power, t0: float, t1: float, hz: float, device: str = "gpu:0", kind: str = "gpu"):
    """A sampled reading of a known power profile p(t): cumulative energy integrated finely between samples."""
    n = round((t1 - t0) * hz)
    times = [t0 + i / hz for i in range(n + 1)]
    energy, rows = 0.0, []
    for i, t in enumerate(times):
        if i:
            steps = 200
            dt = (t - times[i - 1]) / steps
            energy += sum(power(times[i - 1] + (k + 0.5) * dt) for k in range(steps)) * dt
        rows.append({"t_s": t, "device": device, "kind": kind, "power_w": power(t), "energy_j": energy})
    return EnergyReading("nvml", True, t1 - t0, [DeviceEnergy(device, kind, energy, "nvml_counter")],
                         sampling=Sampling(hz, len(rows), t0, t1), timeseries=rows)


def test_prefill_and_decode_energy_follow_the_power_of_each_phase() -> None:
    # Two static batches: prefill at 300 W for 0.2 s, decode at 150 W for 0.8 s, 50 ms idle gap at 60 W.
    phases = [Phase(10.00, 10.20, 11.00), Phase(11.05, 11.25, 12.05)]

    def power(t: float) -> float:
        for p in phases:
            if p.t_start <= t < p.t_first_token:
                return 300.0
            if p.t_first_token <= t < p.t_end:
                return 150.0
        return 60.0

    r = reading_from_power(power, 9.99, 12.06, hz=100)
    ph = phase_energy([r], phases, 10.0, 12.05)
    assert ph["prefill"]["duration_s"] == pytest.approx(0.4) and ph["decode"]["duration_s"] == pytest.approx(1.6)
    assert ph["prefill"]["gpu_j"] == pytest.approx(0.4 * 300, rel=0.02)
    assert ph["decode"]["gpu_j"] == pytest.approx(1.6 * 150, rel=0.01)
    assert ph["other"]["gpu_j"] == pytest.approx(0.05 * 60, rel=0.1)
    assert ph["prefill"]["gpu_j"] + ph["decode"]["gpu_j"] + ph["other"]["gpu_j"] == pytest.approx(ph["window"]["gpu_j"])
    assert not ph["overlapping_phases"] and ph["resolution_s"] == pytest.approx(0.01)


def test_large_batch_split_is_never_negative_and_sums_to_the_window() -> None:
    # 64 static batches whose prefill (2 ms) is far below the 100 ms sample interval.
    phases, t = [], 0.0
    for _ in range(64):
        phases.append(Phase(t, t + 0.002, t + 0.05))
        t += 0.051
    r = reading_from_power(lambda x: 200.0 + 100.0 * ((x * 37) % 1.0), -0.05, t + 0.05, hz=10)
    block = energy_block([r], [], t, output_tokens=64 * 8 * 16, requests=64 * 8, input_tokens=64 * 8 * 128,
                         window_span=(0.0, t), phases=phases)
    ph = block["phases"]
    assert ph["basis"] == "gpu" and ph["other_j"] >= 0
    # truth (the sawtooth integrated over the spans): prefill 31.98 J (64 x 2 ms), decode 767.7 J (64 x 48 ms).
    # Sub-sample spans are split by time x fitted power, so each can be off by the sawtooth's spread within
    # a cell (200..300 W around 250: +-20 %); decode, 94 % of every cell, lands within 2 %.
    assert ph["prefill_j"] == pytest.approx(31.98, rel=0.2) and ph["decode_j"] == pytest.approx(767.7, rel=0.02)
    assert ph["prefill_j"] + ph["decode_j"] + ph["other_j"] == pytest.approx(ph["window"]["gpu_j"], rel=1e-12)
    assert ph["j_per_output_token_decode"] == pytest.approx(ph["decode_j"] / (64 * 8 * 15))
    assert ph["j_per_input_token_prefill"] == pytest.approx(ph["prefill_j"] / (64 * 8 * 128))
    assert any("shorter than the sample interval" in n for n in ph["notes"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 9), st.floats(0, 1), st.floats(0, 1), st.booleans()), min_size=1, max_size=12),
       st.lists(st.floats(0, 500), min_size=3, max_size=30))
def test_any_phases_any_power_split_is_nonnegative_and_exhaustive(spans, powers) -> None:
    phases = [Phase(a, None if not split else a + p, a + p + d) for a, p, d, split in spans]
    hz = len(powers) / 10.0
    r = reading_from_power(lambda t: powers[min(int(t * hz), len(powers) - 1)], 0.0, 10.0, hz=hz)
    ph = phase_energy([r], phases, 0.5, 9.5)
    labels = [k for k in ("prefill", "decode", "mixed", "unsplit", "other") if k in ph]
    assert all(ph[k]["gpu_j"] >= 0 and ph[k]["duration_s"] >= 0 for k in labels)
    assert sum(ph[k]["gpu_j"] for k in labels) == pytest.approx(ph["window"]["gpu_j"], rel=1e-9, abs=1e-9)
    assert sum(ph[k]["duration_s"] for k in labels) == pytest.approx(9.0)


def test_overlapping_requests_label_prefill_only_where_alone() -> None:
    spans = timeline([Phase(0.0, 0.1, 1.0), Phase(0.5, 0.6, 1.5)], 0.0, 2.0)
    assert spans == [(0.0, 0.1, "prefill"), (0.1, 0.5, "decode"), (0.5, 0.6, "mixed"), (0.6, 1.5, "decode"),
                     (1.5, 2.0, "other")]
    # Poisson-like load: one request always decoding while others prefill → no instant is prefill
    busy = [Phase(k * 1.0, k * 1.0 + 0.2, k * 1.0 + 1.5) for k in range(5)]
    labels = {lab for _, _, lab in timeline(busy, 0.0, 5.5)}
    assert "prefill" in labels  # the first request's own prefill, alone
    assert sum(b - a for a, b, lab in timeline(busy, 0.0, 5.5) if lab == "prefill") == pytest.approx(0.2)


def test_steady_state_span_gives_its_own_energy_per_token() -> None:
    r = reading_from_power(lambda t: 100.0 if t < 2.0 or t > 8.0 else 400.0, 0.0, 10.0, hz=20)
    span = energy_in_span([r], 2.0, 8.0)
    assert span["gpu_j"] == pytest.approx(2400.0, rel=0.01) and span["covered"]
    block = energy_block([r], [], 10.0, 1000, 10,
                         steady_state=SteadyState(t_start=2.0, t_end=8.0, output_tokens=800, requests=10))
    ss = block["steady_state"]
    assert ss["j_per_output_token"] == pytest.approx(3.0, rel=0.01) and ss["mean_power_w"] == pytest.approx(400, rel=0.01)
    assert block["j_per_output_token"] == pytest.approx(block["gpu_j"] / 1000)


def test_no_series_means_no_split() -> None:
    r = EnergyReading("zeus", True, 1.0, [DeviceEnergy("gpu:0", "gpu", 5.0, "zeus")])
    assert phase_energy([r], [Phase(0, 0.1, 1)], 0, 1) is None and energy_in_span([r], 0, 1) is None
