"""Streaming client of an OpenAI-compatible server: one request → one `RequestRecord`.

Each request is a streamed `/v1/completions` (or `/v1/chat/completions`) POST with
`stream_options.include_usage`, so token counts are the server's own (`usage`); every streamed chunk's
receipt time is taken with `time.perf_counter()` (the measurement window's clock) as its bytes arrive.
On vLLM servers llem also asks for `continuous_usage_stats` (usage in every chunk), which says how
many tokens each chunk carried: `token_times` then holds one entry per output token. Elsewhere it
holds one entry per streamed chunk with tokens, and `ChunkCount` says when chunks and tokens differ.

The parsing of the event stream follows vLLM's serving benchmark (`vllm/benchmarks/lib/
endpoint_request_func.py`): SSE messages split on blank lines, `:` comments skipped, a chunk with
`choices` is an output chunk, TTFT = first output chunk − send, latency ends at the last output chunk.
Sending at scheduled arrival times is `llem.serving.schedule.drive`'s job.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from dataclasses import dataclass, field
from typing import Any

from llem.measure.latency import RequestRecord

ENDPOINTS = {"completions": "/completions", "chat": "/chat/completions"}
# Request fields llem sets itself; `openai.extra_body` may not override them.
RESERVED_BODY = ("model", "prompt", "messages", "stream", "stream_options", "max_tokens")


@dataclass
class ClientSettings:
    """What every request of a job carries (from OpenaiConfig plus what llem learnt of the server)."""

    base_url: str  # .../v1
    model: str  # the served model name
    endpoint: str = "completions"  # completions | chat
    max_tokens: int = 32
    ignore_eos: bool = True  # fixed-length decoding where the server supports it
    vllm_server: bool = False  # vLLM: also min_tokens = max_tokens and usage in every chunk
    temperature: float = 0.0
    request_timeout_s: float = 600.0
    headers: dict[str, str] = field(default_factory=dict)  # Authorization (never logged)
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + ENDPOINTS[self.endpoint]


def build_payload(s: ClientSettings, prompt: str, max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body of one streamed request."""
    n = s.max_tokens if max_tokens is None else max_tokens
    body: dict[str, Any] = {"model": s.model, "max_tokens": n, "temperature": s.temperature, "stream": True,
                            "stream_options": {"include_usage": True}}
    if s.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if s.ignore_eos:
        body["ignore_eos"] = True
        if s.vllm_server:
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

    chunk_times: list[float] = field(default_factory=list)  # receipt time of each output chunk
    chunk_tokens: list[int | None] = field(default_factory=list)  # tokens in it (continuous usage) or None
    text: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    def add(self, data: dict[str, Any], t: float, endpoint: str) -> None:
        if "error" in data and not data.get("choices"):  # an error event inside the stream (vLLM does this)
            err = data["error"]
            self.error = f"ServerError: {err.get('message', err) if isinstance(err, dict) else err}"
            return
        usage = data.get("usage") or None
        seen = self.completion_tokens or 0
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
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
        elif carries:
            self.chunk_times.append(t)
            self.chunk_tokens.append(None)
        self.text.append(piece)


def finish_record(index: int, st: StreamState, t_submit: float, t_fail: float | None,
                  local_input_tokens: int | None, tokenizer: Any = None) -> RequestRecord:
    """The request's record from its stream: token counts from usage, else the tokenizer, else chunks."""
    exact = bool(st.chunk_tokens) and all(n is not None for n in st.chunk_tokens)
    if exact:
        times = [t for t, n in zip(st.chunk_times, st.chunk_tokens) for _ in range(int(n or 0))]
    else:
        times = list(st.chunk_times)
    n_out = st.completion_tokens
    if n_out is None and tokenizer is not None and st.text:
        n_out = len(tokenizer("".join(st.text), add_special_tokens=False)["input_ids"])
    if n_out is None:
        n_out = len(times)
    n_in = st.prompt_tokens if st.prompt_tokens is not None else (local_input_tokens or 0)
    error = st.error
    if error is None and not st.chunk_times:
        error = "EmptyStream: the answer carried no output token"
    first = st.chunk_times[0] if st.chunk_times else None
    end = st.chunk_times[-1] if st.chunk_times and error is None else (t_fail or time.perf_counter())
    return RequestRecord(index=index, input_tokens=n_in, output_tokens=n_out if error is None else len(times),
                         t_submit=t_submit, t_first_token=first, t_end=end, token_times=times, error=error)


class StreamClient:
    """An aiohttp session (one per job, opened outside the window) that streams requests."""

    def __init__(self, settings: ClientSettings, tokenizer: Any = None) -> None:
        self.s = settings
        self.tokenizer = tokenizer
        self._session: Any = None
        self.chunk_mismatch = 0  # answers whose chunk count differs from their token count (no exact per-chunk tokens)

    async def open(self) -> None:
        import aiohttp

        # limit=0: no connection cap of the client's own (max_concurrency is the scheduler's job).
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=self.s.request_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, index: int, prompt: str, local_input_tokens: int | None = None,
                   max_tokens: int | None = None) -> RequestRecord:
        """Stream one request; failures become a record with `error` (never an exception)."""
        import aiohttp

        body = build_payload(self.s, prompt, max_tokens)
        st = StreamState()
        t_fail = None
        t_submit = time.perf_counter()
        try:
            async with self._session.post(self.s.url, json=body, headers=self.s.headers) as resp:
                if resp.status != 200:
                    st.error = f"HTTP {resp.status}: {_error_message(await resp.read())}"
                else:
                    parser = SseParser()
                    async for data in resp.content.iter_any():
                        t = time.perf_counter()
                        for payload in parser.feed(data):
                            if payload == "[DONE]":
                                continue
                            st.add(json.loads(payload), t, self.s.endpoint)
        except asyncio.TimeoutError:
            st.error = (f"TimeoutError: no complete answer within openai.request_timeout_s="
                        f"{self.s.request_timeout_s:g} s")
        except aiohttp.ClientConnectorError as e:
            st.error = f"ConnectionError: cannot connect to {self.s.url}: {e.os_error or e}"
        except (aiohttp.ClientError, ValueError) as e:
            st.error = f"{type(e).__name__}: {e} (after {len(st.chunk_times)} streamed chunks)"
        if st.error is not None:
            t_fail = time.perf_counter()
        rec = finish_record(index, st, t_submit, t_fail, local_input_tokens, self.tokenizer)
        if rec.error is None and len(rec.token_times) != rec.output_tokens:
            self.chunk_mismatch += 1
        return rec


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
