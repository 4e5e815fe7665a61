"""The HTTP client against the fake OpenAI server (tests/fakes/fake_openai.py, in this process on its own thread):
stream integrity, failure codes, the read timeout, the connection pool, usage checks, the server-gone
rule. Timing ground truth (another process, through `python -m llem`): tests/e2e/test_openai_truth.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_openai import Behaviour, FakeServer  # noqa: E402

from llem.serving.client import ClientSettings, StreamClient, pool_size  # noqa: E402
from llem.serving.schedule import drive  # noqa: E402


def _run(b: Behaviour, n: int = 4, tokenizer: Any = None, **settings: Any) -> tuple[list[Any], StreamClient, Any]:
    with FakeServer(b) as srv:
        client = StreamClient(ClientSettings(base_url=srv.base_url, model="llem/tiny-gpt2", max_tokens=8,
                                             **settings), tokenizer)

        async def go() -> list[Any]:
            await client.open()
            try:
                return await drive([0.0] * n, lambda i: client.send(i, "hi"))
            finally:
                await client.close()

        records = asyncio.run(go())
        return records, client, srv.stats


def test_a_whole_stream_succeeds_with_one_entry_per_chunk() -> None:
    recs, client, stats = _run(Behaviour(tokens_per_chunk=[2]))
    for r in recs:
        assert r.succeeded and r.failure is None and r.finish_reason == "length"
        assert r.output_tokens == 8 and len(r.chunk_times) == 4 and r.chunk_tokens == [1, 1, 1, 1]
        assert r.t_first_token == r.chunk_times[0] and r.t_end == r.chunk_times[-1]
    assert stats.fields.get("ignore_eos") is None  # a server not known to take it: not sent
    assert stats.stream_options == {"include_usage": 4}


def test_tokens_per_chunk_come_from_continuous_usage_on_vllm() -> None:
    recs, client, stats = _run(Behaviour(tokens_per_chunk=[2, 1], owned_by="vllm"), vllm_server=True,
                               ignore_eos=True)
    assert [r.chunk_tokens for r in recs] == [[2, 1, 2, 1, 2]] * 4
    assert all(len(r.token_times) == 8 and r.token_times[0] == r.token_times[1] for r in recs)
    assert stats.fields["min_tokens"] == 4 and stats.stream_options["continuous_usage_stats"] == 4
    assert client.check_usage().count == 0


@pytest.mark.parametrize("chunked", [True, False])
def test_a_stream_cut_mid_answer_is_a_truncated_failure(chunked: bool) -> None:
    recs, _, _ = _run(Behaviour(truncate_every=2, truncate_after=2, chunked=chunked))
    assert [r.failure for r in recs] == [None, "truncated", None, "truncated"]
    cut = recs[1]
    assert not cut.succeeded and cut.output_tokens == 2 and len(cut.chunk_times) == 2 and cut.t_end >= cut.chunk_times[-1]


def test_finish_reason_and_usage_end_a_request_without_done() -> None:
    recs, _, _ = _run(Behaviour(no_done=True), read_timeout_s=30.0)
    assert all(r.succeeded and r.output_tokens == 8 for r in recs)  # not 30 s timeouts


def test_usage_that_disagrees_with_the_stream_is_counted_and_reported(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    recs, client, _ = _run(Behaviour(usage_delta=3, tokens_per_chunk=[2]), tokenizer=tok)
    assert all(r.succeeded and r.output_tokens == 11 for r in recs)  # usage counts
    mm = client.check_usage()
    assert mm.count == 4 and mm.first == (0, 11, 8) and "tokenizer" in mm.how
    _, exact, _ = _run(Behaviour(tokens_per_chunk=[2]), tokenizer=tok)
    assert exact.check_usage().count == 0  # two tokens per chunk, counted by the tokenizer: no false alarm


def test_http_errors_and_silence_are_failures_with_their_code() -> None:
    recs, _, _ = _run(Behaviour(status_every=2, status=503))
    assert [r.failure for r in recs] == [None, "http_5xx", None, "http_5xx"] and "HTTP 503" in recs[1].error
    recs, _, _ = _run(Behaviour(status_every=1, status=429), n=2)
    assert [r.failure for r in recs] == ["http_4xx", "http_4xx"] and "429" in recs[0].error
    recs, _, _ = _run(Behaviour(hang_every=2), read_timeout_s=0.3)
    assert [r.failure for r in recs] == [None, "timeout", None, "timeout"] and "read_timeout_s=0.3" in recs[1].error


def test_a_refused_connection_is_a_failed_request() -> None:
    from fake_openai import free_port

    client = StreamClient(ClientSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m"))

    async def go() -> Any:
        await client.open()
        try:
            return await client.send(0, "hi"), await client.health(1.0)
        finally:
            await client.close()

    rec, (ok, seen) = asyncio.run(go())
    assert rec.failure == "connection" and not ok and "no answer" in seen


def test_the_pool_queues_requests_beyond_its_size() -> None:
    recs, client, stats = _run(Behaviour(gap_s=0.002), n=40, max_connections=3)
    assert all(r.succeeded for r in recs) and client.pool == 3
    assert stats.peak_active <= 3 and stats.requests == 40


def test_pool_size_follows_the_open_file_limit() -> None:
    assert pool_size(None, 1024) == 768 and pool_size(None, 100) == 1 and pool_size(7, 1024) == 7
    assert pool_size(None, 10**7) == 8192


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    import subprocess

    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)); "
            "from llem.serving.client import raise_nofile_limit; print(raise_nofile_limit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1024, 1024)"


def test_health_sees_an_unhealthy_server() -> None:
    with FakeServer(Behaviour(unhealthy=True)) as srv:
        client = StreamClient(ClientSettings(base_url=srv.base_url, model="m"))

        async def go() -> Any:
            await client.open()
            try:
                bad = await client.health()
                srv.behaviour.unhealthy = False
                return bad, await client.health()
            finally:
                await client.close()

        (bad, seen), (good, _) = asyncio.run(go())
    assert not bad and "503" in seen and good
