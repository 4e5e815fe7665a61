"""The short human summary printed after a job (outside the measurement window)."""

from __future__ import annotations

from typing import Any


def _latency_line(lat: dict[str, Any], serving: dict[str, Any] | None) -> str:
    """TTFT, TPOT (a request's mean gap after its first token), ITL (every gap between streamed chunks or
    engine steps, pooled: vLLM's ITL) and e2e, each p50; serving jobs read their own succeeded-only block."""
    if serving:
        tpot, itl = serving.get("tpot_s"), serving.get("itl_s")
        lat = serving
    else:
        tpot, itl = lat.get("itl_request_mean_s"), lat.get("itl_step_s")
    parts = [f"TTFT p50 {_ms(lat.get('ttft_s'))}", f"TPOT p50 {_ms(tpot)}"]
    if itl and itl.get("n"):
        parts.append(f"ITL p50 {_ms(itl)}")
    return ", ".join(parts + [f"e2e p50 {_ms(lat.get('e2e_s'))}"])


def _ms(stats: dict[str, Any], key: str = "p50") -> str:
    value: float | None = (stats or {}).get(key)
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


def render(result: dict[str, Any], out_dir: str) -> str:
    if result["status"] != "completed":
        err = result.get("error") or {}
        return f"llem: job {result['status']}: {err.get('type')}: {err.get('message')}\n  result: {out_dir}"
    w, t, lat, e = result["workload"], result["throughput"], result["latency"], result["energy"]
    ident = result["identity"]
    if e.get("measured"):
        kind = f"{e['basis']}, ESTIMATE by {'/'.join(e['meters'])}" if e.get("estimate") else e["basis"]
        energy = (f"{e['energy_j']:.2f} J ({kind}), {e['j_per_output_token']:.4g} J/token, "
                  f"mean {e['mean_power_w']:.1f} W")
        adj = e.get("adjusted") or {}
        if adj.get("energy_j") is not None:
            energy += f"; minus idle baseline {adj['energy_j']:.2f} J"
    else:
        energy = f"not measured ({e.get('reason')})"
    if w.get("batch_size") is None:  # the server schedules (openai backend): no batch knob of ours
        batch = f"{w.get('batching') or 'server'} batching"
    else:
        batch = (f"max_num_seqs {w['batch_size']}" if w.get("batching") == "continuous"
                 else f"batch {w['batch_size']}")
    steady = t.get("steady_state")
    lines = [
        f"llem {ident['backend']} · {ident['model']} · {ident['precision']} · {batch} · "
        f"config {ident['config_hash']}",
        f"  tokens     {w['prompts']} prompts, {w['input_tokens']} in / {w['output_tokens']} out",
        f"  throughput {t['output_tok_s']:.1f} output tok/s, {t['requests_s']:.2f} req/s "
        f"(window {result['timing']['window_s']:.3f} s, load {result['timing']['load_s']:.2f} s)",
        f"  latency    {_latency_line(lat, (result.get('serving') or {}).get('latency'))}",
        f"  energy     {energy}",
    ]
    if steady:
        lines.append(f"  steady     {steady['output_tok_s']:.1f} output tok/s over {steady['duration_s']:.3f} s "
                     f"with a full batch of {steady['batch_size']}")
    sv = result.get("serving") or {}
    if sv:  # scenario=serving: offered vs achieved rate, SLO attainment, J per request
        offered = "inf" if sv.get("request_rate_inf") else f"{sv['request_rate']:g}"
        slo = sv["slo"]
        jpr = (sv.get("energy") or {}).get("j_per_request")
        limits = ", ".join(f"{name} <= {slo[key]:g} s" for name, key in
                           (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("e2e", "e2el_s")) if slo.get(key) is not None)
        req = sv["requests"]
        by = ", ".join(f"{k} {v}" for k, v in (req.get("failed_by_reason") or {}).items())
        lines.append(f"  serving    {offered} req/s offered, {sv['achieved_rate_s'] or 0:.2f} achieved; "
                     + (f"{slo['met']}/{req['sent']} within the SLO ({limits}), goodput "
                        f"{slo['goodput_rate_s'] or 0:.2f} req/s" if limits else "no SLO set")
                     + (f"; {jpr:.4g} J/request" if jpr is not None else "")
                     + (f"; {req['failed']} of {req['sent']} failed ({by})" if req["failed"] else ""))
    lines.append(f"  result     {out_dir}/result.json")
    return "\n".join(lines)
