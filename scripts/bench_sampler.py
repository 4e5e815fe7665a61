"""Sampler overhead: llem's output tok/s with the NVML power sampler at 10 / 50 / 100 Hz vs energy off.

On a machine without an NVIDIA GPU (this one) the sampler reads a SIMULATED NVML (the test suite's GPU
simulator, tests/fakes/gpu_sim.py, injected where llem imports `pynvml`): this is a CPU cost check of llem's sampler
thread (wake-ups, reads, bookkeeping competing with generation for the CPU), NOT a GPU measurement.
On a GPU machine (`--real-nvml`) the real pynvml is used and the figure is the real one.

Every arm is a full llem job (`llem.job.run_job` in this process): `energy=none` vs
`energy.meter=nvml energy.sample_hz=<hz>`, same model and prompts, interleaved ABBA repetitions.
Ratio = tok/s with sampler / tok/s off (median of pair ratios); 1.00 = no cost.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, Report, interleave, paired_ratio, parse, parser, progress, run_llem, spread  # noqa: E402

RATES = (10, 50, 100)
TARGET = 0.98  # a sampler costing more than 2 % of throughput would distort what it measures


FAKES = REPO / "tests" / "fakes" / "gpu_sim.py"


def install_fake() -> Any:
    """The energy tests' GPU simulator (one H100 at 300 W on the real clock, its counter stepping every
    100 ms, running this process), registered as `pynvml` so `import pynvml` in llem/energy/meters/nvml/meter.py gets
    it, as in tests/unit/energy/meters/nvml/test_meter.py."""
    spec = importlib.util.spec_from_file_location("gpu_sim", FAKES)
    assert spec and spec.loader
    sim = importlib.util.module_from_spec(spec)
    sys.modules["gpu_sim"] = sim
    spec.loader.exec_module(sim)
    module = sim.host("H100", watts=300.0)
    module.gpus[0].runs_caller = True
    sys.modules["pynvml"] = module
    return module


def overrides(n: int, hz: int | None) -> list[str]:
    base = ["backend=pytorch", "model=tiny", "dataset=synthetic", "dataset.input_tokens=32", f"n={n}",
            "pytorch.batch_size=8", "pytorch.max_output_tokens=32", "quiet=true", "save_requests=false"]
    if hz is None:
        return [*base, "energy=none"]
    return [*base, "energy.meter=nvml", f"energy.sample_hz={hz}"]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--real-nvml", action="store_true", help="use the real pynvml (GPU machines)")
    args = parse(ap)
    report = Report("sampler", args.quick,
                    "llem.job.run_job in-process, energy=none vs energy.meter=nvml at 10/50/100 Hz, "
                    "interleaved ABBA; ratio = median pair ratio of output tok/s")
    if not args.real_nvml:
        try:
            import llem.energy.meters.nvml.meter  # noqa: F401
        except ImportError as e:
            report.skip("sampler", f"llem's NVML meter (llem/energy/meters/nvml/meter.py, issue 5) is not here yet ({e})")
            report.finish(args.json)
            return
        if not FAKES.is_file():
            report.skip("sampler", f"{FAKES.relative_to(REPO)} (the energy tests' GPU simulator) is not here")
            report.finish(args.json)
            return
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        install_fake()
        report.note("CPU cost check with the energy tests' GPU simulator (tests/fakes/gpu_sim.py, one H100): "
                    "NOT a GPU measurement")
    n = 64 if args.quick else 128
    reps = 3 if args.quick else 7
    arms: dict[str, Any] = {"off": None, **{f"{hz} Hz": hz for hz in RATES}}
    counts: dict[str, list[int]] = {name: [] for name in arms}

    def arm(name: str) -> float:
        hz = arms[name]
        with tempfile.TemporaryDirectory(prefix="llem-bench-sampler-") as tmp:
            r = run_llem(overrides(n, hz), Path(tmp))
            if hz is not None:
                assert r.energy.get("measured"), f"nvml meter measured nothing: {r.energy.get('reason')}"
                samples = len(_timeseries_rows(Path(r.identity["job_dir"])))
                counts[name].append(samples)
            return r.throughput["output_tok_s"]

    try:
        arm("off"), arm("10 Hz")  # one-time imports, not counted
    except Exception as e:  # the meter or the fake is not usable yet: say so rather than fail
        report.skip("sampler", f"{type(e).__name__}: {e}")
        report.finish(args.json)
        return
    for name in arms:
        counts[name].clear()
    res = interleave({name: (lambda name=name: arm(name)) for name in arms}, reps, progress("sampler"))
    off = spread(res["off"])
    for hz in RATES:
        name = f"{hz} Hz"
        ratio = paired_ratio(res[name], res["off"])
        s = spread(res[name])
        samples = spread(counts[name])["median"] if counts[name] else None
        report.row(f"sampler {name} / off output tok/s{'' if args.real_nvml else ' (fake NVML, CPU cost)'}",
                   ratio["median"], "ratio", f">= {TARGET}", ratio["median"] >= TARGET,
                   f"{s['median']:,.0f} vs {off['median']:,.0f} tok/s; pair IQR {ratio['p25']:.3f}-"
                   f"{ratio['p75']:.3f}; ~{samples} samples per window")
        report.doc["data"][name] = {"tok_s": res[name], "ratio": ratio, "samples": counts[name]}
    report.doc["data"]["off"] = {"tok_s": res["off"], "spread": off}
    noop = noop_sampler_cost(3 if args.quick else 7)
    ratio = paired_ratio(noop["100 Hz no-op"], noop["off"])
    report.row("sampler thread alone: no-op reads at 100 Hz / off, plain generate loop", ratio["median"], "ratio",
               None, None, f"llem's Sampler with a read that does nothing, beside model.generate; pair IQR "
                           f"{ratio['p25']:.3f}-{ratio['p75']:.3f}: the cost of waking a Python thread 100x/s")
    report.doc["data"]["noop_sampler"] = {**noop, "ratio": ratio}
    read_s = read_cost()
    if read_s is not None:
        report.row("sampler: one sample (all NVML queries of one GPU)" + ("" if args.real_nvml else ", fake NVML"),
                   read_s, "s", None, None,
                   f"{read_s * 1e6:.1f} us per sample = {read_s * 100 * 100:.3f} % of one core at 100 Hz; "
                   "a larger throughput cost comes from the thread's wake-ups and GIL hand-offs")
        report.doc["data"]["read_s"] = read_s
    report.finish(args.json)


def noop_sampler_cost(reps: int) -> dict[str, list[float]]:
    """tok/s of a plain generate loop with llem's Sampler thread running a no-op read at 100 Hz vs no
    thread: separates the thread's own wake-up cost from what a read costs."""
    import torch
    from transformers import AutoModelForCausalLM

    from llem.energy.sampler import Sampler
    from llem.models.tiny import ensure_tiny_model

    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model("tiny-gpt2")).eval()
    ids = torch.randint(0, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    kw = {"max_new_tokens": 32, "min_new_tokens": 32, "do_sample": False, "pad_token_id": 0}

    def loop(hz: float | None, batches: int = 16) -> float:
        sampler = Sampler(lambda t: [], hz) if hz else None
        if sampler:
            sampler.start()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(batches):
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        dt = time.perf_counter() - t0
        if sampler:
            sampler.stop()
        return batches * 8 * 32 / dt

    loop(None, 2)
    return interleave({"off": lambda: loop(None), "100 Hz no-op": lambda: loop(100.0)}, reps)


def read_cost(n: int = 300) -> float | None:
    """Mean wall time of one sampler read (the meter's per-sample function), outside any job."""
    from llem.config.schema import EnergyConfig
    from llem.energy import make_meter

    meter = make_meter("nvml", EnergyConfig(meter="nvml"))
    read = getattr(meter, "_read", None)
    if read is None:
        return None
    try:
        meter.probe()
        read(time.perf_counter())
        t0 = time.perf_counter()
        for _ in range(n):
            read(time.perf_counter())
        return (time.perf_counter() - t0) / n
    finally:
        meter.close()


def _timeseries_rows(job_dir: Path) -> list[Any]:
    path = job_dir / "timeseries.parquet"
    if not path.is_file():
        return []
    import pandas as pd

    return pd.read_parquet(path).to_dict("records")


if __name__ == "__main__":
    main()
