"""Node-power meters against a known power profile: the integral's error per BMC interface and rate.

    .venv/bin/python scripts/bench_node_power.py [--steps 12] [--dwell 1.0] [--rates 1.0,0.25]

Starts the same real servers the tests use on 127.0.0.1 (sushy-tools' sushy-static serving a Redfish
EnvironmentMetrics mockup; tests/fakes/ipmi_bmc_sim.py, a pyghmi BMC answering DCMI Get Power Reading),
plays a seeded step profile into them (a new power every `dwell` seconds, like a BMC updating once a
second), runs the node meter over it and compares its energy with the exact integral of what the
BMC served over the meter's own span. Prints one row per (source, sample_s) and writes JSON to stdout's
last line. Timings depend on the host; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fakes"))
sys.path.insert(0, str(REPO))

from node_bmc import RedfishMockup, ipmi_bmc, sushy_static  # noqa: E402

from llem.config.schema import EnergyConfig, NodeConfig  # noqa: E402
from llem.energy.meters.node import make_node_meter  # noqa: E402


def run(set_power, cfg: EnergyConfig, steps: list[float], dwell: float, initial: float) -> dict:
    meter = make_node_meter(cfg)
    meter.probe()
    switches: list[tuple[float, float]] = []

    def play() -> None:
        for p in steps:
            set_power(p)
            switches.append((time.perf_counter(), p))
            time.sleep(dwell)

    meter.start()
    t = threading.Thread(target=play)
    t.start()
    t.join()
    reading = meter.stop()
    meter.close()
    times = [r["t_s"] for r in reading.timeseries]
    t0, t1 = reading.devices[0].extra["span_start_s"], reading.devices[0].extra["span_end_s"]
    points = [(-1e18, initial), *switches, (1e18, switches[-1][1])]
    true_j = sum(p * (min(b, t1) - max(a, t0)) for (a, p), (b, _) in zip(points, points[1:]) if min(b, t1) > max(a, t0))
    got = reading.devices[0].energy_j
    return {"energy_j": got, "true_j": true_j, "error_pct": (got - true_j) / true_j * 100,
            "samples": len(times), "span_s": t1 - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--dwell", type=float, default=1.0)
    ap.add_argument("--rates", default="1.0,0.25")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    steps = [float(rng.randrange(200, 800, 10)) for _ in range(args.steps)]
    rates = [float(x) for x in args.rates.split(",")]
    rows = []
    tmp = Path(tempfile.mkdtemp())
    mock = RedfishMockup(tmp / "mockup", power_w=300.0)
    with sushy_static(mock.root) as address:
        for s in rates:
            mock.set_power(300.0)
            cfg = EnergyConfig(meter="none", node=NodeConfig(source="redfish", address=address, sample_s=s))
            rows.append({"source": "redfish", "sample_s": s, **run(mock.set_power, cfg, steps, args.dwell, 300.0)})
    os.environ["BENCH_BMC_USER"], os.environ["BENCH_BMC_PASS"] = "bench", "bench-pass"
    with ipmi_bmc(tmp, "bench", "bench-pass", power_w=300.0) as (port, power):
        for s in rates:
            power.set(300.0)
            cfg = EnergyConfig(meter="none", node=NodeConfig(
                source="ipmi", address="127.0.0.1", port=port, username_env="BENCH_BMC_USER",
                password_env="BENCH_BMC_PASS", sample_s=s))
            rows.append({"source": "ipmi", "sample_s": s, **run(power.set, cfg, steps, args.dwell, 300.0)})
    print(f"profile: {args.steps} steps of {args.dwell:g} s, 200-800 W (seed {args.seed})")
    print(f"{'source':8} {'sample_s':>8} {'samples':>7} {'true J':>9} {'meter J':>9} {'error %':>8}")
    for r in rows:
        print(f"{r['source']:8} {r['sample_s']:8g} {r['samples']:7d} {r['true_j']:9.1f} {r['energy_j']:9.1f} "
              f"{r['error_pct']:8.2f}")
    print(json.dumps({"steps": args.steps, "dwell_s": args.dwell, "rows": rows}))


if __name__ == "__main__":
    main()
