"""Adaptive thermal gaps vs fixed 60 s / 300 s gaps: wall time of a 20-job study on the GPU simulator's
cooling curve (issue 20, target: adaptive ≤ 1/3 of fixed).

    .venv/bin/python scripts/bench_gaps.py [--quick] [--json out.json] [--job-s 60] [--thermal-tau-s 20]

Time-scaled: the study runs on the simulator's clock (tests/fakes/gpu_sim.py SimClock), so an hour of study takes
a second. The GPU is an H100 of the simulator (idle 70 W, 600 W under load, ambient 32 °C, 0.1 °C/W,
first-order temperature with `--thermal-tau-s`, leakage power decaying with `--power-tau-s`). The study: 4
configs × 5 cycles, interleaved, each job `--job-s` at full load. Fixed arm: llem.study.gaps.gap_before with
60 s / 300 s (the fixed defaults on GPU hosts). Adaptive arm: llem.gpu.cool.wait_cool — the launcher's test
(within study.cool.temp_c = 3 °C and study.cool.power_w = 10 W of the idle state read before the study,
polled every study.cool.poll_s = 1 s), reading the GPU through llem.device as on a real host. Reported: the
total wall time of the study (jobs + gaps), the gap time alone, and the temperature each job starts at.
"""

from __future__ import annotations

import sys

from bench_common import REPO, Report, parse, parser

sys.path.insert(0, str(REPO / "tests" / "fakes"))

CONFIGS, CYCLES = 4, 5
LOAD_W, IDLE_W = 600.0, 70.0


def study(mode: str, job_s: float, thermal_tau_s: float, power_tau_s: float) -> dict[str, float | list[float]]:
    import gpu_sim

    from llem.config.schema import CoolConfig
    from llem.gpu import cool as cool_mod
    from llem.study.gaps import Gaps, gap_before

    clock = gpu_sim.SimClock()
    sim = gpu_sim.host("H100", clock=clock, watts=IDLE_W, thermal_tau_s=thermal_tau_s, power_tau_s=power_tau_s)
    sys.modules["pynvml"] = sim
    c = cool_mod.Cool.of(CoolConfig())
    idle = cool_mod.read_gpus(None)
    fixed = Gaps(60.0, 300.0)
    t0 = clock()
    gaps_s, start_temps = 0.0, []
    prev = None
    for cycle in range(CYCLES):
        for _ in range(CONFIGS):  # interleaved: every config once per cycle
            if prev is not None:
                g0 = clock()
                if mode == "fixed":
                    clock.advance(gap_before(prev, cycle, fixed))
                else:
                    cool_mod.wait_cool(lambda: cool_mod.read_gpus(None), idle, c, clock, clock.advance)
                gaps_s += clock() - g0
            start_temps.append(cool_mod.read_gpus(None)[sim.gpus[0].uuid][0])
            sim.set_power(0, LOAD_W)
            clock.advance(job_s)
            sim.set_power(0, IDLE_W)
            prev = cycle
    return {"wall_s": clock() - t0, "gaps_s": gaps_s, "start_temperature_c": start_temps,
            "idle_temperature_c": idle[sim.gpus[0].uuid][0]}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--job-s", type=float, default=60.0, help="seconds each job runs at full load")
    ap.add_argument("--thermal-tau-s", type=float, default=20.0, help="the GPU's thermal time constant")
    ap.add_argument("--power-tau-s", type=float, default=5.0, help="leakage power's decay after a load")
    args = parse(ap)
    rep = Report("gaps", args.quick, __doc__.split("\n\n")[1] if __doc__ else "")
    taus = [args.thermal_tau_s] if args.quick else sorted({args.thermal_tau_s, 8.0, 20.0, 40.0})
    for tau in taus:
        fixed = study("fixed", args.job_s, tau, args.power_tau_s)
        adaptive = study("adaptive", args.job_s, tau, args.power_tau_s)
        ratio = float(adaptive["wall_s"]) / float(fixed["wall_s"])  # type: ignore[arg-type]
        gap_ratio = float(adaptive["gaps_s"]) / float(fixed["gaps_s"])  # type: ignore[arg-type]
        hottest = max(adaptive["start_temperature_c"][1:])  # type: ignore[index]
        hottest_fixed = max(fixed["start_temperature_c"][1:])  # type: ignore[index]
        detail = (f"thermal tau {tau:g} s, {CONFIGS}x{CYCLES} jobs of {args.job_s:g} s: study {adaptive['wall_s']:.0f} s "
                  f"vs {fixed['wall_s']:.0f} s; gaps {adaptive['gaps_s']:.0f} s vs {fixed['gaps_s']:.0f} s (ratio "
                  f"{gap_ratio:.3f}); hottest job start {hottest:.0f} °C adaptive vs {hottest_fixed:.0f} °C fixed "
                  f"(idle {adaptive['idle_temperature_c']:.0f} °C)")
        rep.row(f"study wall time adaptive/fixed (tau {tau:g} s)", ratio, "ratio", "<= 0.333", ratio <= 1 / 3, detail)
        rep.doc["data"][f"tau_{tau:g}"] = {"fixed": fixed, "adaptive": adaptive, "wall_ratio": ratio,
                                           "gap_ratio": gap_ratio}
    rep.finish(args.json)


if __name__ == "__main__":
    main()
