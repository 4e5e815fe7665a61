"""Knobs of the transformers/PyTorch backend (`pytorch.<knob>=...`), one field each (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Decoding(str, Enum):
    greedy = "greedy"
    sample = "sample"


@dataclass
class PytorchConfig:
    """transformers/PyTorch backend knobs (address them as `pytorch.<knob>=...`)."""

    batch_size: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    device_map: str | None = None  # e.g. auto: let accelerate place layers across devices
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2 | null (library default)
    torch_compile: bool = False
    torch_compile_mode: str | None = None  # default | reduce-overhead | max-autotune
    use_cache: bool = True
    cache_implementation: str | None = None  # e.g. static
    num_beams: int = 1
    load_in_4bit: bool = False  # bitsandbytes; CUDA only
    load_in_8bit: bool = False
    max_input_tokens: int = 512  # prompts are truncated to this many tokens
    max_output_tokens: int = 32
    fixed_length: bool = True  # min_new_tokens = max_new_tokens, EOS ignored: comparable J/token
    decoding: Decoding = Decoding.greedy
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    latency_tracking: bool = True  # per-token timestamps (TTFT/ITL); off = end-to-end only
