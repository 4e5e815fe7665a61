"""Ground truth for the llem-vs-`vllm bench serve` TTFT gap on a real vLLM server (docs/serving-client.md,
"Why the TTFT ratio swung"): a loaded vLLM API server delivers whole answers in one write for seconds at a
time, so a client's TTFT is then the answer's END. The fake server reproduces this (`hold_every`: every n-th
answer held and written at once when its last chunk is due). Both clients must report what was delivered:
TTFT = first write − send, held or not, and agree with each other request by request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_openai import Behaviour, FakeProcess  # noqa: E402

from llem.serving.client import ClientSettings, StreamClient  # noqa: E402

TTFT_S, GAP_S, TOKENS = 0.030, 0.005, 8
HELD_TTFT_S = TTFT_S + (TOKENS - 1) * GAP_S  # a held answer's first byte leaves with its last chunk
TOL_S = 0.010  # send -> arrival on a loaded 2-core host; the two modes are 35 ms apart


def _delivered(timeline: list[list[float]]) -> list[float]:
    return [t[1] - t[0] for t in timeline]


async def _llem(srv: FakeProcess, n: int) -> list[Any]:
    client = StreamClient(ClientSettings(base_url=srv.base_url, model="llem/tiny-gpt2", max_tokens=TOKENS))
    await client.open()
    try:
        return [await client.send(i, "hello") for i in range(n)]
    finally:
        await client.close()


@pytest.mark.slow
def test_a_held_answer_has_its_ttft_at_the_write_and_all_chunks_in_one_read() -> None:
    with FakeProcess(Behaviour(ttft_s=TTFT_S, gap_s=GAP_S, hold_every=2)) as srv:
        recs = asyncio.run(_llem(srv, 6))
        truth = _delivered(srv.stats["timeline"])
    for i, (r, want) in enumerate(zip(recs, truth)):
        held = (i + 1) % 2 == 0
        assert r.failure is None and len(r.chunk_times) == TOKENS
        assert want >= (HELD_TTFT_S if held else TTFT_S) - 0.001
        assert 0 <= r.ttft_s - want <= TOL_S, (i, r.ttft_s, want)  # TTFT = the first byte's delivery
        if held:
            assert len(set(r.chunk_times)) == 1 and r.e2e_s == r.ttft_s  # one read: ITL 0, TTFT = e2e
            assert r.ttft_s >= HELD_TTFT_S
        else:
            assert r.ttft_s < HELD_TTFT_S - 0.02 and len(set(r.chunk_times)) > 1


@pytest.mark.slow
def test_llem_and_vllms_own_client_report_the_same_ttft_request_by_request_held_or_streamed() -> None:
    """Interleaved on one fake server (every 3rd answer held): each client's TTFT equals the delivered one
    within TOL_S, so a p50 over a run is the share of held answers, not the client."""
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    async def run(srv: FakeProcess) -> list[tuple[str, float]]:
        client = StreamClient(ClientSettings(base_url=srv.base_url, model="m", max_tokens=TOKENS))
        await client.open()
        out = []
        async with aiohttp.ClientSession(trust_env=False) as session:
            for i in range(12):
                if i % 2 == 0:
                    rec = await client.send(i, "hello")
                    assert rec.failure is None
                    out.append(("llem", rec.ttft_s))
                else:
                    o = await async_request_openai_completions(RequestFuncInput(
                        prompt="hello", api_url=srv.base_url + "/completions", prompt_len=1, output_len=TOKENS,
                        model="m"), session)
                    assert o.success, o.error
                    out.append(("vllm", o.ttft))
        await client.close()
        return out

    with FakeProcess(Behaviour(ttft_s=TTFT_S, gap_s=GAP_S, hold_every=3)) as srv:
        got = asyncio.run(run(srv))
        truth = _delivered(srv.stats["timeline"])
    for i, ((who, ttft), want) in enumerate(zip(got, truth)):
        assert 0 <= ttft - want <= TOL_S, (i, who, ttft, want)
    held = {who for i, (who, _) in enumerate(got) if (i + 1) % 3 == 0}
    assert held == {"llem", "vllm"}  # both clients met held answers
