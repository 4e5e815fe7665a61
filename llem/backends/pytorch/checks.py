"""Range checks of `pytorch.*`, before any model loads (pure; registered in BACKENDS)."""

from __future__ import annotations

import re

from llem.config.schema import Decoding, ExperimentConfig
from llem.config.validate import Checks

ATTN = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CACHE_IMPLS = ("static", "dynamic", "offloaded", "offloaded_static", "sliding_window", "hybrid", "quantized")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check(c: Checks, cfg: ExperimentConfig) -> None:
    pt = cfg.pytorch
    if pt is None or cfg.backend != "pytorch":
        return
    c.int_min("pytorch.batch_size", pt.batch_size, 1)
    if not DEVICE.match(pt.device):
        c.add("pytorch.device", pt.device, "auto, cpu, mps, cuda or cuda:N")
    c.one_of("pytorch.attn_implementation", pt.attn_implementation, ATTN, optional=True)
    c.one_of("pytorch.torch_compile_mode", pt.torch_compile_mode, COMPILE_MODES, optional=True)
    c.one_of("pytorch.cache_implementation", pt.cache_implementation, CACHE_IMPLS, optional=True)
    c.int_min("pytorch.num_beams", pt.num_beams, 1)
    c.int_min("pytorch.max_input_tokens", pt.max_input_tokens, 1)
    c.int_min("pytorch.max_output_tokens", pt.max_output_tokens, 1)
    if pt.load_in_4bit and pt.load_in_8bit:
        c.add("pytorch.load_in_8bit", True, "false when pytorch.load_in_4bit=true (choose one quantization)")
    if (pt.load_in_4bit or pt.load_in_8bit) and pt.device in ("cpu", "mps"):
        c.add("pytorch.load_in_4bit" if pt.load_in_4bit else "pytorch.load_in_8bit", True,
              f"false with pytorch.device={pt.device}: bitsandbytes 4/8-bit loading needs a CUDA GPU")
    if pt.decoding == Decoding.sample:
        c.num_range("pytorch.temperature", pt.temperature, 0.0, 100.0, lo_open=True)
        c.int_min("pytorch.top_k", pt.top_k, 0)
        c.num_range("pytorch.top_p", pt.top_p, 0.0, 1.0, lo_open=True)
    if pt.num_beams > 1 and pt.decoding == Decoding.sample:
        c.add("pytorch.num_beams", pt.num_beams, "1 with pytorch.decoding=sample (beam sampling is not measured)")
