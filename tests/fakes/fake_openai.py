"""A fake OpenAI-compatible server whose timing is known: ground truth for llem's serving client.

aiohttp on 127.0.0.1, a free port. It streams `/v1/completions` and `/v1/chat/completions` answers
as vLLM does (SSE `data:` lines, a final usage chunk when `stream_options.include_usage`, usage in every
chunk with `continuous_usage_stats`, `data: [DONE]`), on a schedule fixed by `Behaviour`:

- the first chunk `ttft_s` after the request arrived, then one chunk every `gap_s`, each carrying the
  next entry of `tokens_per_chunk` (cycled: [2] = 2 tokens per chunk); deadlines are absolute
  (chunk k at arrival + ttft_s + k·gap_s), so sleep overshoot does not accumulate;
- faults, by the request's 1-based arrival number n (`*_every` = every n divisible by it):
  `status_every` answers HTTP `status` (500, 429, ...); `truncate_every` closes the connection after
  `truncate_after` chunks with no [DONE], finish_reason or usage (`chunked=False`: a raw HTTP/1.1
  answer without chunked encoding, delimited by the close, which the client sees as a clean EOF);
  `hang_every` sends headers and then nothing; `no_done` ends with finish_reason + usage and keeps
  the connection open without [DONE]; `usage_delta` adds to usage.completion_tokens;
  `die_after` exits the process (os._exit) when request n = die_after arrives (run it as a subprocess);
  `hold_every` holds an answer's chunks and writes them all at once when its last chunk is due (what a
  loaded vLLM API server does to whole answers in phases: the client sees the whole answer in one read).
- `GET /health` (503 while `unhealthy`), `GET /v1/models` (owned_by = `owned_by`: "vllm" makes llem
  ask for continuous usage stats), `GET /stats` (requests seen, fields they carried, peak concurrency).

In-process: `with FakeServer(Behaviour(...)) as srv: srv.base_url` (its own thread and event loop).
As a program: `python tests/fakes/fake_openai.py '{"ttft_s": 0.05}'` prints `PORT <n>` and serves until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

WORD = " a"  # one token of GPT-2's tokenizer (llem/tiny-gpt2): text and token counts agree


@dataclass
class Behaviour:
    ttft_s: float = 0.0
    gap_s: float = 0.0
    tokens_per_chunk: list[int] = field(default_factory=lambda: [1])
    output_tokens: int | None = None  # None: the request's max_tokens
    owned_by: str = "fake"
    model: str = "llem/tiny-gpt2"
    status: int = 500
    status_every: int = 0
    truncate_every: int = 0
    truncate_after: int = 2  # chunks sent before the cut
    chunked: bool = True
    hang_every: int = 0
    no_done: bool = False
    usage_delta: int = 0
    die_after: int = 0
    unhealthy: bool = False
    hold_every: int = 0  # every n-th answer is held and written in ONE write when its last chunk is due


@dataclass
class Stats:
    requests: int = 0
    active: int = 0
    peak_active: int = 0
    fields: dict[str, int] = field(default_factory=dict)  # request body keys seen, counted
    stream_options: dict[str, int] = field(default_factory=dict)
    # Per request (first 2000): [arrival, each chunk's write time...] (perf_counter: CLOCK_MONOTONIC,
    # comparable across processes on Linux) — the server's side of the ground truth.
    timeline: list[list[float]] = field(default_factory=list)


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A prompt sent as token ids counts as many tokens; text counts 8 (the fake has no tokenizer)."""
    p = body.get("prompt")
    return len(p) if isinstance(p, list) and all(isinstance(x, int) for x in p) else 8


def _sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


class FakeApp:
    def __init__(self, b: Behaviour) -> None:
        self.b = b
        self.stats = Stats()
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/stats", self.get_stats)
        self.app.router.add_post("/v1/completions", self.complete)
        self.app.router.add_post("/v1/chat/completions", self.complete)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.b.unhealthy else 200)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.b.model, "object": "model", "owned_by": self.b.owned_by, "max_model_len": 4096}]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def complete(self, request: web.Request) -> web.StreamResponse:
        t_arrival = time.perf_counter()
        body = await request.json()
        st = self.stats
        st.requests += 1
        n = st.requests
        for k in body:
            st.fields[k] = st.fields.get(k, 0) + 1
        for k in body.get("stream_options") or {}:
            st.stream_options[k] = st.stream_options.get(k, 0) + 1
        b = self.b
        if b.die_after and n >= b.die_after:
            os._exit(3)
        if b.status_every and n % b.status_every == 0:
            return web.json_response({"error": {"message": f"injected HTTP {b.status}", "code": b.status}},
                                     status=b.status)
        st.active += 1
        st.peak_active = max(st.peak_active, st.active)
        try:
            if b.truncate_every and n % b.truncate_every == 0 and not b.chunked:
                return await self._raw_cut(request, body, t_arrival)
            return await self._stream(request, body, t_arrival, n)
        finally:
            st.active -= 1

    def _chunks(self, body: dict[str, Any]) -> list[int]:
        total = self.b.output_tokens or int(body.get("max_tokens") or 16)
        out, i = [], 0
        while sum(out) < total:
            k = self.b.tokens_per_chunk[i % len(self.b.tokens_per_chunk)]
            out.append(min(k, total - sum(out)))
            i += 1
        return out

    def _payload(self, body: dict[str, Any], k: int, done: int, finish: str | None) -> dict[str, Any]:
        chat = "messages" in body
        text = WORD * k
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        data: dict[str, Any] = {"id": "cmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
                                "model": self.b.model, "choices": [choice]}
        if (body.get("stream_options") or {}).get("continuous_usage_stats"):
            n_in = _prompt_tokens(body)
            data["usage"] = {"prompt_tokens": n_in, "completion_tokens": done, "total_tokens": n_in + done}
        return data

    async def _stream(self, request: web.Request, body: dict[str, Any], t0: float, n: int) -> web.StreamResponse:
        b = self.b
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if b.hang_every and n % b.hang_every == 0:
            await asyncio.sleep(3600)
        chunks = self._chunks(body)
        cut = b.truncate_after if (b.truncate_every and n % b.truncate_every == 0) else None
        done = 0
        times = [t0]
        if len(self.stats.timeline) < 2000:
            self.stats.timeline.append(times)
        held = bool(b.hold_every and n % b.hold_every == 0)
        pending: list[bytes] = []
        for i, k in enumerate(chunks):
            if cut is not None and i == cut:
                request.transport.close()  # mid-answer, chunked encoding unterminated
                return resp
            last = i == len(chunks) - 1
            if not (held and not last):
                delay = t0 + b.ttft_s + i * b.gap_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            done += k
            pending.append(_sse(self._payload(body, k, done, "length" if last else None)))
            if held and not last:
                continue
            t_write = time.perf_counter()
            times.extend([t_write] * len(pending))  # a held answer: every chunk written at this one instant
            await resp.write(b"".join(pending))
            pending.clear()
        n_in = _prompt_tokens(body)
        usage = {"prompt_tokens": n_in, "completion_tokens": done + b.usage_delta,
                 "total_tokens": n_in + done + b.usage_delta}
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_sse({"id": "cmpl-fake", "choices": [], "usage": usage}))
        if b.no_done:
            await asyncio.sleep(3600)  # finish_reason + usage sent; [DONE] never comes
        await resp.write(_sse(b"[DONE]"))
        await resp.write_eof()
        return resp

    async def _raw_cut(self, request: web.Request, body: dict[str, Any], t0: float) -> web.StreamResponse:
        """HTTP/1.1 200 without chunked encoding or Content-Length: the body ends when the connection
        closes, which it does after `truncate_after` chunks (a clean EOF for the client)."""
        tr = request.transport
        assert tr is not None
        tr.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        done = 0
        for i, k in enumerate(self._chunks(body)[: self.b.truncate_after]):
            delay = t0 + self.b.ttft_s + i * self.b.gap_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            done += k
            tr.write(_sse(self._payload(body, k, done, None)))
        await asyncio.sleep(0.01)
        tr.close()
        raise asyncio.CancelledError  # the connection is gone: aiohttp writes nothing more


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_nofile() -> None:
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class FakeServer:
    """The fake server on its own thread and event loop (start/stop, or a context manager)."""

    def __init__(self, behaviour: Behaviour | None = None, port: int | None = None) -> None:
        self.fake = FakeApp(behaviour or Behaviour())
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-openai")
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def behaviour(self) -> Behaviour:
        return self.fake.b

    @property
    def stats(self) -> Stats:
        return self.fake.stats

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.fake.app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=4096).start()

    def start(self) -> FakeServer:
        _raise_nofile()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._runner.cleanup(), 2)
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:  # hung answers (hang_every, no_done)
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class FakeProcess:
    """The fake server as its own process (timing ground truth: no GIL shared with the client under test).
    `stats` are read from GET /stats."""

    def __init__(self, behaviour: Behaviour | None = None, env: dict[str, str] | None = None) -> None:
        self.b = behaviour or Behaviour()
        self.env = env
        self.proc: Any = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:  # noqa: S310
            return json.loads(r.read())

    def start(self) -> FakeProcess:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(asdict(self.b))], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=self.env)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            self.proc.stdout.close()

    def __enter__(self) -> FakeProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    b = Behaviour(**json.loads(argv[0])) if argv else Behaviour()
    port = int(argv[1]) if len(argv) > 1 else free_port()
    _raise_nofile()
    fake = FakeApp(b)

    async def serve() -> None:
        runner = web.AppRunner(fake.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1:])
