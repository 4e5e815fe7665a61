"""Streaming client of an OpenAI-compatible server: one request → one `RequestRecord`.

Each request is a streamed `/v1/completions` (or `/v1/chat/completions`) POST with
`stream_options.include_usage`, so token counts are the server's own (`usage`); every streamed chunk's
receipt time is taken with `time.perf_counter()` (the measurement window's clock) as its bytes arrive.
On vLLM servers llem also asks for `continuous_usage_stats` (usage in every chunk), which says how
many tokens each chunk carried (`chunk_tokens`); elsewhere each chunk counts as one token.

Definitions follow vLLM's serving benchmark (`vllm/benchmarks/lib/endpoint_request_func.py`): SSE
messages split on blank lines, `:` comments skipped, a chunk with `choices` is an output chunk,
`chunk_times` holds one entry per output chunk (ITL = their gaps: a chunk of k tokens is ONE gap),
TTFT = first output chunk − send, e2e ends at the last output chunk.

Integrity (docs/serving-client.md): a request succeeds only when its stream ended as a complete answer:
`[DONE]`, or `finish_reason` together with the usage llem asked for (that pair ends the request at
once, without waiting for `[DONE]`). A stream that stops before either is `truncated`, whatever it
carried. When the server's `usage.completion_tokens` differs from the tokens streamed (the sum of
`chunk_tokens`), llem counts usage (the server's count of what it generated) and the backend warns with
both counts. Failure codes: `llem.measure.latency.FAILURE_CODES`.

Scale: `open()` raises the soft open-file limit to the hard one; connections are bounded by a pool of
`max_connections` slots (default: from the open-file limit). A request due while every slot is busy
waits for one *before* it is sent, so the wait shows as lateness (send − due), never as TTFT, and no
request fails for want of a socket. `read_timeout_s` bounds the silence between two reads of one
answer (queueing before the first byte included); there is no whole-stream cap unless
`request_timeout_s` is set.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from llem.measure.latency import RequestRecord

ENDPOINTS = {"completions": "/completions", "chat": "/chat/completions"}
# Request fields llem sets itself; `openai.extra_body` may not override them.
RESERVED_BODY = ("model", "prompt", "messages", "stream", "stream_options", "max_tokens")
# Servers known to accept the fixed-length fields ignore_eos and min_tokens (by /v1/models owned_by).
FLOOR_SERVERS = ("vllm", "sglang")
FD_RESERVE = 256  # open files kept free for everything else of the job (model files, logs, meters)
MAX_POOL = 8192  # default connection cap even when the open-file limit is huge
DRAIN_S = 0.25  # after finish_reason + usage: how long to wait for [DONE] so the connection can be reused


@dataclass
class ClientSettings:
    """What every request of a job carries (from OpenaiConfig plus what llem learnt of the server)."""

    base_url: str  # .../v1
    model: str  # the served model name
    endpoint: str = "completions"  # completions | chat
    max_tokens: int = 32
    ignore_eos: bool = False  # send ignore_eos (the backend decides: FLOOR_SERVERS, or asked)
    vllm_server: bool = False  # vLLM: usage in every chunk (continuous_usage_stats), min_tokens
    server_kind: str = ""  # /v1/models owned_by ("vllm", "sglang", ...): min_tokens goes to FLOOR_SERVERS
    temperature: float = 0.0
    read_timeout_s: float = 600.0  # longest silence between two reads of one answer
    request_timeout_s: float | None = None  # whole-request cap (send to last byte); None: none
    max_connections: int | None = None  # connection pool size; None: from the open-file limit
    headers: dict[str, str] = field(default_factory=dict)  # Authorization (never logged)
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + ENDPOINTS[self.endpoint]

    @property
    def sends_min_tokens(self) -> bool:
        return self.vllm_server or self.server_kind in FLOOR_SERVERS


def build_payload(s: ClientSettings, prompt: str | list[int], max_tokens: int | None = None,
                  ignore_eos: bool | None = None) -> dict[str, Any]:
    """The JSON body of one streamed request (`prompt` as token ids: sent as is to /v1/completions)."""
    n = s.max_tokens if max_tokens is None else max_tokens
    body: dict[str, Any] = {"model": s.model, "max_tokens": n, "temperature": s.temperature, "stream": True,
                            "stream_options": {"include_usage": True}}
    if s.endpoint == "chat":
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
    if s.ignore_eos if ignore_eos is None else ignore_eos:
        body["ignore_eos"] = True
        if s.sends_min_tokens:
            body["min_tokens"] = n
    if s.vllm_server:
        body["stream_options"]["continuous_usage_stats"] = True
    body.update(s.extra_body)
    return body


class SseParser:
    """Bytes of a `text/event-stream` → complete `data:` payloads (as vLLM's StreamedResponseHandler)."""

    def __init__(self) -> None:
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> list[str]:
        self.buffer += self._decoder.decode(data)
        out = []
        while "\n\n" in self.buffer:
            message, self.buffer = self.buffer.split("\n\n", 1)
            out.extend(_payloads(message))
        if self.buffer.startswith("data:"):  # a last message some servers do not terminate
            rest = self.buffer[5:].strip()
            if rest == "[DONE]" or _is_json(rest):
                out.append(rest)
                self.buffer = ""
        return out


def _payloads(message: str) -> list[str]:
    lines = [ln for ln in message.strip().splitlines() if ln.startswith("data:")]  # ':' comments, 'event:' skipped
    return ["\n".join(ln[5:].strip() for ln in lines)] if lines else []


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@dataclass
class StreamState:
    """What one streamed answer gave so far."""

    chunk_times: list[float] = field(default_factory=list)  # receipt time of each chunk carrying output
    chunk_tokens: list[int | None] = field(default_factory=list)  # tokens in it (continuous usage) or None
    text: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    usage_seen: bool = False  # a usage object with completion_tokens arrived
    done: bool = False  # data: [DONE] arrived
    error: str | None = None
    failure: str | None = None  # FAILURE_CODES

    @property
    def complete(self) -> bool:
        """The answer ended as a whole: [DONE], or finish_reason with the usage llem asked for."""
        return self.done or (self.finish_reason is not None and self.usage_seen)

    def fail(self, failure: str, error: str) -> None:
        if self.failure is None:  # the first cause wins
            self.failure, self.error = failure, error

    def add(self, data: dict[str, Any], t: float, endpoint: str) -> None:
        if "error" in data and not data.get("choices"):  # an error event inside the stream (vLLM does this)
            err = data["error"]
            self.fail("server", f"ServerError: {err.get('message', err) if isinstance(err, dict) else err}")
            return
        usage = data.get("usage") or None
        seen = self.completion_tokens or 0
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            if usage.get("completion_tokens") is not None:
                self.completion_tokens = int(usage["completion_tokens"])
                self.usage_seen = True
        choices = data.get("choices") or []
        if not choices:
            return
        c = choices[0]
        if endpoint == "chat":
            delta = c.get("delta") or {}
            piece = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""
            carries = bool(piece)
        else:
            piece = c.get("text") or ""
            carries = True  # text may be empty (a partial UTF-8 character): still a token (as vLLM's benchmark)
        self.finish_reason = c.get("finish_reason") or self.finish_reason
        if usage and usage.get("completion_tokens") is not None:  # continuous usage: exact tokens per chunk
            n_new = int(usage["completion_tokens"]) - seen
            if n_new > 0:
                self.chunk_times.append(t)
                self.chunk_tokens.append(n_new)
        elif carries and (piece or c.get("finish_reason") is None):  # a bare finish chunk carries no token
            self.chunk_times.append(t)
            self.chunk_tokens.append(None)
        self.text.append(piece)

    @property
    def streamed_tokens(self) -> int:
        """Tokens the chunks carried: exact per chunk where the server said (continuous usage), else 1 each."""
        return sum(1 if n is None else int(n) for n in self.chunk_tokens)


def finish_record(index: int, st: StreamState, t_submit: float, t_fail: float | None,
                  local_input_tokens: int | None, tokenizer: Any = None) -> RequestRecord:
    """The request's record from its stream: output tokens from usage, else the streamed count."""
    if st.error is None and not st.complete:
        st.fail("truncated", f"Truncated: the stream ended after {len(st.chunk_times)} output chunks without "
                             f"[DONE] or finish_reason+usage (finish_reason={st.finish_reason!r}, "
                             f"usage={'yes' if st.usage_seen else 'no'})")
    if st.error is None and not st.chunk_times:
        st.fail("truncated", "EmptyStream: the answer carried no output token")
    tokens = [1 if n is None else int(n) for n in st.chunk_tokens]
    # Per-token series, for attribution only: a chunk's k tokens all at its time (k = 1 where unknown).
    times = [t for t, n in zip(st.chunk_times, tokens) for _ in range(n)]
    n_out = st.completion_tokens
    if n_out is None and tokenizer is not None and st.text:
        n_out = len(tokenizer("".join(st.text), add_special_tokens=False)["input_ids"])
    if n_out is None:
        n_out = sum(tokens)
    n_in = st.prompt_tokens if st.prompt_tokens is not None else (local_input_tokens or 0)
    ok = st.error is None
    first = st.chunk_times[0] if st.chunk_times else None
    end = st.chunk_times[-1] if st.chunk_times and ok else (t_fail or time.perf_counter())
    return RequestRecord(index=index, input_tokens=n_in, output_tokens=n_out if ok else sum(tokens),
                         t_submit=t_submit, t_first_token=first, t_end=end, token_times=times, error=st.error,
                         chunk_times=list(st.chunk_times), chunk_tokens=tokens, finish_reason=st.finish_reason,
                         failure=st.failure)


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE raised to the hard limit (as far as the OS lets); returns (soft, hard) after."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def pool_size(asked: int | None, soft_nofile: int) -> int:
    """Connections the client may hold: `asked`, else what the open-file limit leaves after FD_RESERVE."""
    if asked:
        return int(asked)
    if soft_nofile <= 0:
        return 1024
    return max(1, min(MAX_POOL, soft_nofile - FD_RESERVE))


@dataclass
class Mismatch:
    """Succeeded answers whose usage.completion_tokens differs from the tokens streamed."""

    count: int = 0
    first: tuple[int, int, int] | None = None  # (request index, usage, streamed)
    how: str = ""  # how the streamed tokens were counted


class StreamClient:
    """An aiohttp session (one per job, opened outside the window) that streams requests."""

    def __init__(self, settings: ClientSettings, tokenizer: Any = None) -> None:
        self.s = settings
        self.tokenizer = tokenizer
        self._session: Any = None
        self._slots: asyncio.Semaphore | None = None
        self.nofile: tuple[int, int] = (0, 0)
        self.pool = 0
        self.mismatch = Mismatch()
        self._answers: dict[int, tuple[int, int | None, str]] = {}  # index -> (usage, streamed if exact, text)
        self.chunk_mismatch = 0  # answers whose chunk count differs from their token count (several tokens per chunk)

    async def open(self) -> None:
        import aiohttp

        self.nofile = raise_nofile_limit()
        self.pool = pool_size(self.s.max_connections, self.nofile[0])
        self._slots = asyncio.Semaphore(self.pool)
        # The pool is ours (slots taken before the send); the connector's cap is the same number as a backstop.
        connector = aiohttp.TCPConnector(limit=self.pool, limit_per_host=self.pool, ttl_dns_cache=300,
                                         keepalive_timeout=60, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=self.s.request_timeout_s, sock_read=self.s.read_timeout_s,
                                        sock_connect=min(self.s.read_timeout_s, 60.0))
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def info(self) -> dict[str, Any]:
        """What the result's backend_info records of the client."""
        return {"max_connections": self.pool, "open_files_limit": {"soft": self.nofile[0], "hard": self.nofile[1]},
                "read_timeout_s": self.s.read_timeout_s, "request_timeout_s": self.s.request_timeout_s}

    async def health(self, timeout_s: float = 5.0) -> tuple[bool, str]:
        """(healthy, what was seen): GET /health 200, or /v1/models 200 where /health is absent. Its own
        small session: a pool full of streaming answers must not delay the question."""
        import aiohttp

        root = self.s.base_url.rstrip("/")
        root = root[:-3] if root.endswith("/v1") else root
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False,
                                             connector=aiohttp.TCPConnector(limit=2, force_close=True)) as session:
                async with session.get(root + "/health", headers=self.s.headers) as r:
                    status = r.status
                if status == 200:
                    return True, "GET /health: 200"
                if status in (404, 405):
                    async with session.get(self.s.base_url.rstrip("/") + "/models", headers=self.s.headers) as r:
                        return r.status == 200, f"GET /health: {status}, GET /v1/models: {r.status}"
                return False, f"GET /health: {status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            return False, f"GET /health: no answer ({type(e).__name__})"

    async def send(self, index: int, prompt: str | list[int], local_input_tokens: int | None = None,
                   max_tokens: int | None = None, ignore_eos: bool | None = None) -> RequestRecord:
        """Stream one request; failures become a record with `failure` and `error` (never an exception).
        Waits for a pool slot first: t_submit is the moment the request leaves."""
        assert self._slots is not None, "StreamClient.open() first"
        async with self._slots:
            return await self._send(index, prompt, local_input_tokens, max_tokens, ignore_eos)

    async def _send(self, index: int, prompt: str | list[int], local_input_tokens: int | None,
                    max_tokens: int | None, ignore_eos: bool | None) -> RequestRecord:
        import aiohttp

        body = build_payload(self.s, prompt, max_tokens, ignore_eos)
        st = StreamState()
        t_fail = None
        t_submit = time.perf_counter()
        try:
            async with self._session.post(self.s.url, json=body, headers=self.s.headers) as resp:
                if resp.status != 200:
                    code = "http_5xx" if resp.status >= 500 else "http_4xx"
                    st.fail(code, f"HTTP {resp.status}: {_error_message(await resp.read())}")
                else:
                    await self._read(resp, st)
        except asyncio.TimeoutError:
            if self.s.request_timeout_s is not None and time.perf_counter() - t_submit >= self.s.request_timeout_s:
                st.fail("timeout", f"TimeoutError: no complete answer within openai.request_timeout_s="
                                   f"{self.s.request_timeout_s:g} s")
            else:
                st.fail("timeout", f"TimeoutError: nothing read for openai.read_timeout_s={self.s.read_timeout_s:g} s "
                                   f"(after {len(st.chunk_times)} output chunks)")
        except aiohttp.ClientConnectorError as e:
            st.fail("connection", f"ConnectionError: cannot connect to {self.s.url}: {e.os_error or e}")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as e:
            if not st.complete:  # a connection cut before the answer was whole
                st.fail("truncated" if st.chunk_times else "connection",
                        f"{type(e).__name__}: {e} (after {len(st.chunk_times)} output chunks)")
        except (aiohttp.ClientError, ValueError) as e:
            st.fail("error", f"{type(e).__name__}: {e} (after {len(st.chunk_times)} output chunks)")
        if st.error is not None:
            t_fail = time.perf_counter()
        rec = finish_record(index, st, t_submit, t_fail, local_input_tokens, self.tokenizer)
        if rec.failure is None and st.usage_seen:  # compared after the run (tokenizing is not for the window)
            exact = all(n is not None for n in st.chunk_tokens)
            self._answers[index] = (int(st.completion_tokens or 0), st.streamed_tokens if exact else None,
                                    "" if exact else "".join(st.text))
        if rec.failure is None and len(rec.chunk_times) != rec.output_tokens:
            self.chunk_mismatch += 1
        return rec

    def reset(self) -> None:
        """Forget the answers of an earlier pass (warmup) before the next."""
        self._answers.clear()
        self.mismatch = Mismatch()
        self.chunk_mismatch = 0

    def check_usage(self) -> Mismatch:
        """After the run: answers whose usage.completion_tokens differs from the tokens streamed. Streamed
        = the server's per-chunk counts (continuous usage), else the local tokenizer's count of the streamed
        text, else one token per chunk (said in `how`)."""
        mm = Mismatch()
        for index in sorted(self._answers):
            usage, streamed, text = self._answers[index]
            how = "per-chunk usage"
            if streamed is None and self.tokenizer is not None:
                streamed = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                how = "the local tokenizer's count of the streamed text"
            if streamed is None:
                continue  # no count to compare with (one token per chunk is an assumption, not a count)
            if streamed != usage:
                mm.count += 1
                if mm.first is None:
                    mm.first, mm.how = (index, usage, streamed), how
        self.mismatch = mm
        return mm

    async def _read(self, resp: Any, st: StreamState) -> None:
        """Read the event stream until [DONE], or finish_reason + usage (then drain briefly for reuse)."""
        parser = SseParser()
        content = resp.content
        while True:
            data = await content.readany()
            if not data:
                return  # EOF: finish_record decides whether the answer was whole
            t = time.perf_counter()
            for payload in parser.feed(data):
                if payload == "[DONE]":
                    st.done = True
                    return
                st.add(json.loads(payload), t, self.s.endpoint)
            if st.failure is not None:
                return
            if st.complete:  # finish_reason + usage: the answer is whole; [DONE] is not waited for
                with contextlib.suppress(Exception):
                    rest = await asyncio.wait_for(content.read(), DRAIN_S)
                    st.done = st.done or b"[DONE]" in rest
                return


def _error_message(body: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, else its first bytes."""
    try:
        err = json.loads(body).get("error", {})
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)
    except (ValueError, AttributeError):
        pass
    return body[:300].decode(errors="replace").strip() or "(empty body)"
