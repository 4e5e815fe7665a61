"""Peer: llem, optimum-benchmark 0.6.0 and a plain `generate` loop on the same model and shape.

Shape: batch 8 x 32 input tokens -> exactly 32 new tokens, greedy, fp32, CPU, llem's tiny GPT-2
(the folder `llem.models.tiny.ensure_tiny_model('tiny-gpt2')` builds; every tool loads it from that
local path, no hub). Figures side by side: mean generate latency of one batch, and output tok/s.

- llem: `python -m llem` as a user runs it (a subprocess, result.json read back); mean batch latency
  = `timing.window_s` / batches, tok/s = `throughput.output_tok_s`.
- optimum-benchmark: its `inference` scenario and pytorch backend with its default `process` launcher,
  run in its own virtual environment `.bench-venv-peer` (transformers<5; set it up with
  `bash scripts/peer/setup.sh`); also with its `inline` launcher, to separate the launcher's cost.
- native: `scripts/peer/native_generate.py`, a plain loop, in llem's environment and in the peer's
  (so a transformers-version difference is not mistaken for the tool's cost).

Rounds run every arm once, in rotating order, so load changes on the machine hit all arms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, Report, parse, parser, spread  # noqa: E402

PEER_PY = REPO / ".bench-venv-peer" / "bin" / "python"
PEER_DIR = Path(__file__).resolve().parent / "peer"
BATCH, INPUT_TOKENS, NEW_TOKENS = 8, 32, 32


def _tagged_json(text: str, tag: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise RuntimeError(f"no {tag} line in output:\n{text[-3000:]}")


def _run(cmd: list[str], cwd: Path, all_cores: bool = False, timeout: float = 300) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if all_cores:  # the libraries' default thread count, as a user runs the tools
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MKL_NUM_THREADS", None)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {p.returncode}:\n{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout + p.stderr


def peer(model: Path, launcher: str, duration: int, cwd: Path, all_cores: bool = False) -> dict[str, Any]:
    out = _run([str(PEER_PY), str(PEER_DIR / "run_optimum_benchmark.py"), "--model", str(model),
                "--batch-size", str(BATCH), "--input-tokens", str(INPUT_TOKENS), "--new-tokens", str(NEW_TOKENS),
                "--duration", str(duration), "--launcher", launcher], cwd, all_cores)
    d = _tagged_json(out, "PEER_JSON")
    d["output_tok_s"] = BATCH * NEW_TOKENS / d["generate_latency_mean_s"]
    return d


def native(python: Path, model: Path, iterations: int, cwd: Path, all_cores: bool = False) -> dict[str, Any]:
    out = _run([str(python), str(PEER_DIR / "native_generate.py"), "--model", str(model), "--batch-size",
                str(BATCH), "--input-tokens", str(INPUT_TOKENS), "--new-tokens", str(NEW_TOKENS),
                "--iterations", str(iterations)], cwd, all_cores)
    return _tagged_json(out, "NATIVE_JSON")


def llem(batches: int, cwd: Path) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="llem-", dir=cwd))
    _run([sys.executable, "-m", "llem", "model=tiny", "dataset=synthetic", f"dataset.input_tokens={INPUT_TOKENS}",
          f"n={BATCH * batches}", f"pytorch.batch_size={BATCH}", f"pytorch.max_output_tokens={NEW_TOKENS}",
          "quiet=true", f"hydra.run.dir={run_dir}"], REPO)
    r = json.loads((run_dir / "result.json").read_text())
    assert r["status"] == "completed", r.get("error")
    assert r["workload"]["output_tokens"] == BATCH * batches * NEW_TOKENS, r["workload"]
    return {"generate_latency_mean_s": r["timing"]["window_s"] / batches,
            "output_tok_s": r["throughput"]["output_tok_s"], "batches": batches,
            "e2e_p50_s": r["latency"]["e2e_s"]["p50"], "job_s": r["timing"]["job_s"]}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 3, quick 1)")
    args = parse(ap)
    rounds = args.rounds or (1 if args.quick else 3)
    duration = 1 if args.quick else 3  # optimum-benchmark's minimum tracked seconds per run (its default: 10)
    report = Report("peer", args.quick,
                    "subprocesses: python -m llem, optimum-benchmark 0.6.0 (own venv), plain generate loop; "
                    f"batch {BATCH} x {INPUT_TOKENS} in -> {NEW_TOKENS} new tokens, rotating order")
    from llem.models.tiny import ensure_tiny_model

    model = ensure_tiny_model("tiny-gpt2")
    report.doc["data"]["model_path"] = str(model)
    arms: dict[str, Any] = {
        "llem": lambda cwd: llem(4 if args.quick else 8, cwd),
        "native (llem env)": lambda cwd: native(Path(sys.executable), model, 20, cwd),
    }
    if PEER_PY.is_file():
        arms["optimum-benchmark (process launcher)"] = lambda cwd: peer(model, "process", duration, cwd)
        arms["optimum-benchmark (inline launcher)"] = lambda cwd: peer(model, "inline", duration, cwd)
        arms["native (peer env)"] = lambda cwd: native(PEER_PY, model, 20, cwd)
        if os.environ.get("OMP_NUM_THREADS"):  # pinned here: also show the peer as it runs by default
            arms["optimum-benchmark (process launcher), all cores"] = (
                lambda cwd: peer(model, "process", duration, cwd, all_cores=True))
            arms["native (llem env), all cores"] = lambda cwd: native(Path(sys.executable), model, 20, cwd,
                                                                      all_cores=True)
    else:
        report.skip("optimum-benchmark", f"{PEER_PY} is missing; set it up with `bash scripts/peer/setup.sh`")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    names = list(arms)
    with tempfile.TemporaryDirectory(prefix="llem-bench-peer-") as tmp:  # optimum-benchmark writes its log to cwd
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if name.endswith("all cores") and r > 0:  # slow and only a demonstration: one round
                    continue
                d = arms[name](Path(tmp))
                results[name].append(d)
                print(f"  round {r + 1}: {name}: mean generate {d['generate_latency_mean_s'] * 1000:.1f} ms, "
                      f"{d['output_tok_s']:,.0f} tok/s", flush=True)
    base = spread([d["generate_latency_mean_s"] for d in results["native (llem env)"]])["median"]
    for name in names:
        lat = spread([d["generate_latency_mean_s"] for d in results[name]])
        tps = spread([d["output_tok_s"] for d in results[name]])
        detail = f"{tps['median']:,.0f} tok/s; {lat['median'] / base:.2f}x native (llem env)"
        if name.startswith("optimum"):
            p50 = spread([d["generate_latency_p50_s"] for d in results[name]])["median"]
            detail += f"; its own p50 {p50 * 1000:.1f} ms"
        report.row(f"peer: {name} mean generate latency", lat["median"], "s", None, None,
                   detail + f" (median of {lat['n']} runs, min {lat['min'] * 1000:.1f} max {lat['max'] * 1000:.1f} ms)")
        report.doc["data"][name] = {"runs": results[name], "generate_latency_mean_s": lat, "output_tok_s": tps}
    if "optimum-benchmark (process launcher)" in results:
        report.note("optimum-benchmark's process launcher busy-waits in the parent "
                    "(`while child.is_alive() and not conn.poll(): pass`), holding one core for the whole "
                    "measurement: with all cores in use by torch (', all cores' rows) its figures inflate; "
                    "with one torch thread the spare core hides it")
    report.note("before llem existed, optimum-benchmark reported 0.574 s mean generate latency here vs "
                "0.057-0.09 s for a plain generate loop (same shape)")
    report.finish(args.json)


if __name__ == "__main__":
    main()
