"""The result's `energy` block, from meter readings plus the window's workload (pure).

GPU, CPU and DRAM energy are reported separately; GPU totals cover the job's GPUs only (visible
GPUs without the job's processes are listed in `unattributed_devices`, never summed); derived
per-token figures use the GPU total where measured, else the CPU package total (named in `basis`),
never a silent sum of different meters.
Estimates (codecarbon) are flagged `estimate: true` and never added to measured energy.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from llem.energy.base import DeviceEnergy, EnergyReading
from llem.energy.baseline import Baseline
from llem.energy.meters.node.breakdown import node_figures, pick_basis
from llem.energy.phases import KINDS, energy_in_span, phase_energy
from llem.energy.thermal import ThermalWarmup
from llem.measure.latency import SteadyState

DRIFT_LIMIT_C = 10.0
MIN_SAMPLES = 10


def derived(energy_j: float | None, window_s: float, output_tokens: int, requests: int,
            total_flop: float | None) -> dict[str, float | None]:
    """J/output token, J/request, output tokens/J, Wh per 1,000 queries (AIEnergyScore), mean W, J/FLOP."""
    e = energy_j
    return {
        "energy_j": e,
        "j_per_output_token": e / output_tokens if e is not None and output_tokens else None,
        "j_per_request": e / requests if e is not None and requests else None,
        "output_tokens_per_j": output_tokens / e if e else None,
        "wh_per_1000_queries": e / requests * 1000 / 3600 if e is not None and requests else None,
        "mean_power_w": e / window_s if e is not None and window_s > 0 else None,
        "j_per_flop": e / total_flop if e is not None and total_flop else None,
    }


def _kind_totals(devices: list[dict[str, Any]], key: str = "energy_j",
                 kinds: tuple[str, ...] = KINDS) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for kind in kinds:
        values = [d[key] for d in devices if d["kind"] == kind]
        out[f"{kind}_j"] = None if not values or any(v is None for v in values) else sum(values)
    return out


def energy_block(readings: list[EnergyReading], notes: list[str], window_s: float, output_tokens: int,
                 requests: int, total_flop: float | None = None, *, input_tokens: int | None = None,
                 window_span: tuple[float, float] | None = None, phases: list[Any] | None = None,
                 steady_state: SteadyState | None = None, baseline: Baseline | None = None,
                 thermal_warmup: ThermalWarmup | None = None, basis: str = "auto") -> dict[str, Any]:
    measured = [r for r in readings if r.measured]
    typed = [d for r in measured for d in r.devices]
    devices = [d.as_dict() for d in typed]
    real = [d for d in devices if not d["estimate"]]
    estimate = bool(devices) and not real
    use = real or devices  # estimates only when nothing was measured (energy=codecarbon)
    block: dict[str, Any] = {
        "measured": bool(measured),
        "estimate": estimate,
        "meters": [r.meter for r in readings],
        "selection": notes,
        "reason": None if measured else "; ".join(r.reason or "not measured" for r in readings),
        "devices": devices,
        "window_s": window_s,
    }
    block.update(_kind_totals(use))
    if real and devices != real:
        block["estimates"] = _kind_totals([d for d in devices if d["estimate"]])
    parts = [k for k in KINDS if block[f"{k}_j"] is not None]
    block["measured_total_j"] = sum(block[f"{k}_j"] for k in parts) if real and parts else None
    block["measured_total_parts"] = parts if real else []
    # The BMC's whole node (energy.node.*): beside, never summed into, the parts; rest = node − parts.
    node, node_warnings = node_figures(real, block, window_s, next(
        (r.update_period_s for r in measured if r.meter == "node"), None))
    block.update(node)
    basis = pick_basis(basis, block)  # energy.basis: auto = gpu, else cpu, else node
    block["basis"] = basis
    block.update(derived(block[f"{basis}_j"] if basis else None, window_s, output_tokens, requests, total_flop))

    # Baseline-adjusted: raw − idle power × window time, per device, then per kind and derived.
    block["baseline"] = baseline.as_dict() if baseline is not None else None
    block["adjusted"] = None
    base_devices = baseline.devices if baseline is not None else {}
    if base_devices and real:
        for d in devices:
            b = base_devices.get(d["device"])
            d["adjusted_j"] = None if b is None or d["estimate"] else d["energy_j"] - b.power_w * window_s
        adj = _kind_totals([d for d in devices if not d["estimate"]], "adjusted_j", (*KINDS, "node"))
        adjusted: dict[str, Any] = {**adj, "baseline_power_w": {
            k: sum(base_devices[d["device"]].power_w for d in real if d["kind"] == k)
            if adj[f"{k}_j"] is not None else None for k in (*KINDS, "node")}}
        adjusted.update(derived(adj[f"{basis}_j"] if basis else None, window_s, output_tokens, requests, total_flop))
        block["adjusted"] = adjusted

    # Per-phase energy on the measured pass, and the steady-state span (vLLM), from the sampled series.
    block["phases"] = None
    if phases and window_span is not None:
        ph = phase_energy(measured, phases, *window_span)
        if ph is not None:
            _phase_figures(ph, basis, input_tokens, output_tokens, requests, block["adjusted"])
        block["phases"] = ph
    block["steady_state"] = None
    if steady_state:
        span = energy_in_span(measured, steady_state.t_start, steady_state.t_end)
        if span is not None:
            e = span.get(f"{basis}_j") if basis else None
            n_tok = steady_state.output_tokens or 0
            dur = span["duration_s"]
            span.update({"basis": basis, "output_tokens": n_tok, "requests": steady_state.requests,
                         "j_per_output_token": e / n_tok if e is not None and n_tok else None,
                         "output_tokens_per_j": n_tok / e if e else None,
                         "mean_power_w": e / dur if e is not None and dur > 0 else None})
        block["steady_state"] = span

    block["thermal"] = {d.device: asdict(d.thermal) for d in typed if d.thermal is not None} or None
    block["thermal_warmup"] = thermal_warmup.as_dict() if thermal_warmup is not None else None
    block["sampling"] = {r.meter: r.sampling.block(r.update_period_s)
                         for r in measured if r.sampling is not None} or None
    for r in measured:
        details = r.meter_details()  # curves are the phase split's input, already summarised above
        if details is not None:
            block.setdefault("meter_details", {})[r.meter] = details
    # GPU attribution (nvml): how the job's GPUs were decided, and visible GPUs left out of every total.
    block["attribution"] = next((r.attribution.as_dict() for r in readings if r.attribution is not None), None)
    block["unattributed_devices"] = [asdict(u) for r in readings for u in r.unattributed_devices]
    block["warnings"] = list(dict.fromkeys(energy_warnings(readings, list(zip(typed, devices)), window_s, baseline)
                                           + node_warnings))
    return block


def _phase_figures(ph: dict[str, Any], basis: str | None, input_tokens: int | None, output_tokens: int,
                   requests: int, adjusted: dict[str, Any] | None) -> None:
    """Basis-kind prefill/decode figures: J, J per input token (prefill), J per output token (decode)."""
    ph["basis"] = basis
    if basis is None:
        return
    key = f"{basis}_j"
    for label in ("prefill", "decode", "mixed", "unsplit", "other"):
        if label in ph:
            ph[f"{label}_j"] = ph[label][key]
    prefill, decode = ph.get("prefill_j"), ph.get("decode_j")
    # The first token of each request comes out of prefill; decode makes the rest.
    decode_tokens = output_tokens - requests
    # With 'mixed' time (continuous batching) some prefill and decode energy is in neither: no per-token figure.
    mixed = (ph.get("mixed") or {}).get("duration_s") or 0.0
    ph["j_per_input_token_prefill"] = prefill / input_tokens if prefill is not None and input_tokens and not mixed else None
    ph["j_per_output_token_decode"] = (decode / decode_tokens if decode is not None and decode_tokens > 0 and not mixed
                                       else None)
    power = (adjusted or {}).get("baseline_power_w", {}).get(basis)
    if power is not None:
        for label in ("prefill", "decode", "mixed", "unsplit", "other"):
            if label in ph and ph[label][key] is not None:
                ph[f"{label}_adjusted_j"] = ph[label][key] - power * ph[label]["duration_s"]


def energy_warnings(readings: list[EnergyReading], devices: list[tuple[DeviceEnergy, dict[str, Any]]],
                    window_s: float, baseline: Baseline | None) -> list[str]:
    """What makes this job's energy figures less trustworthy, in words a user can act on (`devices`: each
    measured device and its result entry, which holds its baseline-adjusted energy)."""
    out: list[str] = []
    for r in readings:
        out.extend(r.warnings)
        if not r.measured:
            continue
        period = r.update_period_s
        if period and window_s < period:
            out.append(f"window {window_s:.3f} s is shorter than the {r.meter} energy counter's update period "
                       f"(~{period:g} s): its energy is unreliable; measure more prompts or longer outputs")
        if r.sampling is not None and r.sampling.samples_min < MIN_SAMPLES:
            out.append(f"{r.meter}: only {r.sampling.samples_min} samples in the window (< {MIN_SAMPLES} at "
                       f"{r.sampling.sample_hz} Hz): the power series, its integral and the per-phase split "
                       "are coarse; raise energy.sample_hz or lengthen the window")
    for typed, d in devices:
        th = typed.thermal
        dev = typed.device
        drift = th.temperature_drift_c if th is not None else None
        if drift is not None and drift > DRIFT_LIMIT_C:
            out.append(f"{dev}: temperature rose {drift:.0f} °C during the window (> {DRIFT_LIMIT_C:.0f} °C): not at "
                       "thermal steady state; consider energy.thermal_warmup_s")
        throttled = {k: v for k, v in (th.throttle_s if th is not None else {}).items() if v > 0}
        if throttled:
            what = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(throttled.items()))
            out.append(f"{dev}: clocks were throttled during the window ({what})")
        if th is not None and th.persistence_mode == "off":
            out.append(f"{dev}: persistence mode is off: the driver may re-initialise the GPU between jobs "
                       "(start-up delay, idle-power swings); enable it with `sudo nvidia-smi -pm 1`")
        procs = typed.other_processes
        if procs is not None:
            if procs.others and procs.attributable:
                out.append(f"{dev}: other processes use this GPU (pids {procs.others}): their energy is in "
                           "this job's figures")
            elif not procs.attributable:
                out.append(f"{dev}: NVML lists compute processes {procs.pids} but none is this job's (container "
                           "PID namespace?): cannot tell whether other work shares the GPU")
        if d.get("adjusted_j") is not None and d["adjusted_j"] < 0:
            b = baseline.devices.get(dev) if baseline is not None else None
            out.append(f"{dev}: baseline-adjusted energy is negative: the baseline ({b.power_w if b else 0:.1f} W, "
                       f"{(b.age_s if b else 0) or 0:.0f} s old) exceeds the window's mean power; remeasure it "
                       "(energy.baseline_ttl_s=0)")
    return list(dict.fromkeys(out))
