"""Knobs of the vLLM backend (`vllm.<knob>=...`), one field each (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class VllmConfig:
    """vLLM offline-engine knobs (address them as `vllm.<knob>=...`); conf/backend/vllm.yaml documents each."""

    max_num_seqs: int = 256  # most requests running at once (the continuous batch)
    max_num_batched_tokens: int | None = None  # token budget per engine step; null = vLLM's default
    max_model_len: int | None = None  # context length; null = the model's
    gpu_memory_utilization: float = 0.9  # GPU memory fraction for weights + KV cache (CPU: see README)
    block_size: int | None = None  # KV cache block (tokens); null = vLLM's default for the device
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool | None = None  # null = vLLM's default (on)
    enable_chunked_prefill: bool | None = None  # null = vLLM's default (on)
    enforce_eager: bool = False  # true: no CUDA graphs / torch.compile (faster start, slower steps)
    tensor_parallel_size: int = 1
    quantization: str | None = None  # e.g. awq, gptq, fp8; null = as the checkpoint says
    swap_space: float | None = None  # GiB; V0-engine vLLM only (rejected by vLLM versions without it)
    cpu_offload_gb: float = 0.0
    max_input_tokens: int = 512  # prompts truncated to this many tokens (model tokenizer, exact)
    max_tokens: int = 32  # output tokens per request
    min_tokens: int | None = None  # null with ignore_eos=true: fixed length = max_tokens
    ignore_eos: bool = True  # generate max_tokens every time: comparable J/token across configs
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    token_timestamps: bool = True  # stream each engine step: every token's time (ITL per step)
    steady_state: bool = False  # ML.ENERGY method: also report figures while the batch is full
    engine_args: dict[str, Any] = field(default_factory=dict)  # passthrough to vllm.LLM(...)
