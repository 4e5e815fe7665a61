"""Knobs of the OpenAI-compatible-server backend (`openai.<knob>=...`), one field each (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpenaiServerConfig:
    """The server llem starts when `openai.base_url` is null (conf/backend/openai.yaml documents each)."""

    command: list[str] | None = None  # argv with {port} {model} {host} {served_model_name}; null = vLLM's OpenAI server
    ready_timeout_s: float = 600.0  # wait at most this long for /health (or /v1/models) to answer
    extra_args: list[str] = field(default_factory=list)  # appended to the command, e.g. [--max-num-seqs, "64"]


@dataclass
class OpenaiConfig:
    """Any OpenAI-compatible server (address knobs as `openai.<knob>=...`); conf/backend/openai.yaml documents each."""

    base_url: str | None = None  # http://host:port/v1 of a running server; null = llem starts one (openai.server)
    api_key_env: str | None = None  # name of the environment variable holding the API key (never the key)
    model_name: str | None = None  # served model name; null = model.id (managed) or the one model served
    endpoint: str = "completions"  # completions | chat
    max_input_tokens: int = 512  # prompts truncated to this many tokens of the model's tokenizer
    max_tokens: int = 32  # output tokens per request
    ignore_eos: bool | None = None  # null: sent (with min_tokens) to vLLM/SGLang servers only; true: to any server; false: never
    temperature: float = 0.0  # 0 = greedy
    read_timeout_s: float = 600.0  # longest silence between two reads of one answer (queueing included) before it fails
    request_timeout_s: float | None = None  # whole-request cap (send to last byte); null = none (read_timeout_s bounds silences)
    max_connections: int | None = None  # HTTP connection pool; null = open-file limit - 256 (requests queue for a slot)
    extra_body: dict[str, Any] = field(default_factory=dict)  # more request fields, e.g. {top_k: 1}
    server: OpenaiServerConfig = field(default_factory=OpenaiServerConfig)
