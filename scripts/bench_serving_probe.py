"""Where does a streamed request's TTFT go? One vLLM server, requests one at a time, four arms interleaved.

    .venv/bin/python scripts/bench_serving_probe.py [--n 40] [--output-len 32] [--gap 0.15]

Arms (all in this one process, one request in flight at a time, arm order rotated every round):
- `llem`: llem's StreamClient as the openai backend uses it on a vLLM server (continuous_usage_stats,
  ignore_eos, min_tokens);
- `llem-plain`: the same client without continuous_usage_stats and min_tokens (ignore_eos only);
- `vllm`: vLLM's own `async_request_openai_completions` (what `vllm bench serve` sends);
- `vllm+cus`: vLLM's function with llem's extra fields (continuous_usage_stats, min_tokens).
Per request: the client's TTFT and e2e, how many distinct read times its chunks had, and the SERVER's
own TTFT and e2e for that very request (vLLM's Prometheus histograms `vllm:time_to_first_token_seconds`,
`vllm:e2e_request_latency_seconds`, read before and after it: one request at a time, so the difference
is that request). client TTFT − server TTFT = what HTTP, the stream's flushing and the client add.
Results: benchmarks/results/serving-probe-<date>-<host>.json.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS_DIR, Report, machine_info, parse, parser  # noqa: E402
from bench_serving_peer import prompts, scrape_metrics  # noqa: E402

TTFT, E2E = "vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"
READ_GAP_S = 2e-4  # chunks closer than this came in one read (vLLM's client stamps each message of a read µs apart)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="llem/tiny-gpt2")
    ap.add_argument("--n", type=int, default=40, help="requests per arm (default 40)")
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--gap", type=float, default=0.15, help="pause between requests, s (default 0.15)")
    ap.add_argument("--server-args", default="--enforce-eager --max-num-seqs 64")
    a = parse(ap)
    if a.quick:
        a.n = 8
    rep = Report("serving_probe", a.quick, __doc__.split("\n\n")[1].strip())
    from llem.backends.openai.backend import vllm_server_command
    from llem.config.schema import ExperimentConfig, ModelConfig
    from llem.models import resolve_sources
    from llem.serving.server import ManagedServer, free_port

    src = resolve_sources(ExperimentConfig(model=ModelConfig(id=a.model)))
    tmp = Path(tempfile.mkdtemp(prefix="llem-serving-probe-"))
    port, served = free_port(), "probe-model"
    cmd, env = vllm_server_command(src.model.path, served, port)
    server = ManagedServer(command=cmd + ["--no-enable-prefix-caching", *a.server_args.split()],
                           base_url=f"http://127.0.0.1:{port}/v1", log_path=tmp / "server.log", env=env)
    server.start()
    rep.note(f"vLLM server ready after {server.wait_ready(600, {}):.1f} s: {' '.join(server.command[1:])}")
    try:
        rows = asyncio.run(probe(server.base_url, served, a))
    finally:
        server.stop()
    arms = sorted({r["arm"] for r in rows})
    summary: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        med = {k: statistics.median(r[k] for r in mine) for k in ("ttft_s", "e2e_s", "server_ttft_s", "server_e2e_s",
                                                                  "reads", "chunks")}
        med["ttft_minus_server_s"] = statistics.median(r["ttft_s"] - r["server_ttft_s"] for r in mine)
        med["one_read_fraction"] = sum(r["reads"] == 1 for r in mine) / len(mine)
        summary[arm] = med
        print(f"{arm:11s} " + ", ".join(f"{k} {v * 1e3:.2f} ms" if k.endswith("_s") else f"{k} {v:.3g}"
                                         for k, v in med.items()), flush=True)
        rep.row(f"{arm}: client TTFT p50", med["ttft_s"], "s", "info", True,
                f"server TTFT p50 {med['server_ttft_s'] * 1e3:.2f} ms, client − server p50 "
                f"{med['ttft_minus_server_s'] * 1e3:.2f} ms, e2e p50 {med['e2e_s'] * 1e3:.2f} ms (server "
                f"{med['server_e2e_s'] * 1e3:.2f}), reads p50 {med['reads']:g} for {med['chunks']:g} chunks, "
                f"answers in one read {med['one_read_fraction']:.0%}")
    base = summary.get("vllm")
    if base:
        for arm in arms:
            if arm != "vllm":
                rep.row(f"{arm}/vllm client TTFT p50", summary[arm]["ttft_s"] / base["ttft_s"], "ratio", "1 ± 10%",
                        abs(summary[arm]["ttft_s"] / base["ttft_s"] - 1) <= 0.10, "same server, same process, "
                        "interleaved one at a time")
    rep.doc["data"] = {"summary": summary, "requests": rows, "settings": vars(a) | {"json": str(a.json)}}
    rep.doc["machine"] = machine_info()
    path = a.json or RESULTS_DIR / f"serving-probe-{dt.date.today().isoformat()}-{socket.gethostname()}.json"
    rep.finish(path)
    print(f"written {path}")


async def probe(base_url: str, served: str, a: Any) -> list[dict[str, Any]]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    from llem.serving.client import ClientSettings, StreamClient

    url = base_url[: -len("/v1")]
    clients = {}
    for arm, vllm_server in (("llem", True), ("llem-plain", False)):
        c = StreamClient(ClientSettings(base_url=base_url, model=served, max_tokens=a.output_len, ignore_eos=True,
                                        vllm_server=vllm_server))
        await c.open()
        clients[arm] = c
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), trust_env=False,
                                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
    extra = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}, "min_tokens": a.output_len}

    async def via_vllm(prompt: str, extra_body: dict[str, Any] | None) -> tuple[float, float, list[float]]:
        times: list[float] = []
        inp = RequestFuncInput(prompt=prompt, api_url=f"{url}/v1/completions", prompt_len=0,
                               output_len=a.output_len, model=served, ignore_eos=True,
                               extra_body={"temperature": 0.0, **(extra_body or {})})
        out = await async_request_openai_completions(inp, session)
        assert out.success, out.error
        t = out.ttft
        for gap in out.itl:
            t += gap
            times.append(t)
        return out.ttft, out.latency, [out.ttft, *times]

    async def via_llem(arm: str, i: int, prompt: str) -> tuple[float, float, list[float]]:
        rec = await clients[arm].send(i, prompt)
        assert rec.failure is None, rec.error
        return (rec.t_first_token - rec.t_submit, rec.t_end - rec.t_submit,
                [t - rec.t_submit for t in rec.chunk_times])

    arms = ["llem", "llem-plain", "vllm", "vllm+cus"]
    texts = prompts(a.n * len(arms) + 4, 48)
    rows: list[dict[str, Any]] = []
    for w in range(4):  # warmup, not recorded
        await via_llem("llem", 10_000 + w, "warmup " + texts[-1 - w])
        await via_vllm("warmup " + texts[-1 - w], None)
    k = 0
    for rnd in range(a.n):
        order = arms[rnd % len(arms):] + arms[: rnd % len(arms)]
        for arm in order:
            before = scrape_metrics(url)
            await asyncio.sleep(a.gap)
            prompt = texts[k]
            k += 1
            if arm.startswith("llem"):
                ttft, e2e, chunks = await via_llem(arm, k, prompt)
            else:
                ttft, e2e, chunks = await via_vllm(prompt, extra if arm == "vllm+cus" else None)
            await asyncio.sleep(0.05)  # the server's metrics are updated after the answer
            after = scrape_metrics(url)
            n = after.get(TTFT + "_count", 0) - before.get(TTFT + "_count", 0)
            if n != 1:
                continue
            rows.append({"arm": arm, "ttft_s": ttft, "e2e_s": e2e, "chunks": len(chunks),
                         "reads": 1 + sum(y - x > READ_GAP_S for x, y in zip(chunks, chunks[1:])),
                         "server_ttft_s": after[TTFT + "_sum"] - before[TTFT + "_sum"],
                         "server_e2e_s": after[E2E + "_sum"] - before[E2E + "_sum"], "t": time.time()})
    for c in clients.values():
        await c.close()
    await session.close()
    return rows


if __name__ == "__main__":
    main()
