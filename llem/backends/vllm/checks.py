"""Range checks of `vllm.*`, before any model loads (pure; registered in BACKENDS)."""

from __future__ import annotations

from llem.config.schema import ExperimentConfig
from llem.config.validate import Checks

KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")


def check(c: Checks, cfg: ExperimentConfig) -> None:
    v = cfg.vllm
    if v is None or cfg.backend != "vllm":
        return
    c.int_min("vllm.max_num_seqs", v.max_num_seqs, 1)
    if v.max_num_batched_tokens is not None:
        c.int_min("vllm.max_num_batched_tokens", v.max_num_batched_tokens, 1)
    if v.max_model_len is not None:
        c.int_min("vllm.max_model_len", v.max_model_len, 1)
        if v.max_input_tokens + v.max_tokens > v.max_model_len:  # vLLM would reject the requests mid-job
            c.add("vllm.max_model_len", v.max_model_len,
                  f"null or >= vllm.max_input_tokens + vllm.max_tokens = {v.max_input_tokens + v.max_tokens} "
                  "(or lower vllm.max_input_tokens)")
    if v.swap_space is not None and v.swap_space < 0:
        c.add("vllm.swap_space", v.swap_space, "null or a number of GiB >= 0")
    c.num_range("vllm.gpu_memory_utilization", v.gpu_memory_utilization, 0.0, 1.0, lo_open=True)
    if v.block_size is not None:
        c.one_of("vllm.block_size", v.block_size, (8, 16, 32, 64, 128))
    c.one_of("vllm.kv_cache_dtype", v.kv_cache_dtype, KV_DTYPES)
    c.int_min("vllm.tensor_parallel_size", v.tensor_parallel_size, 1)
    c.num_range("vllm.cpu_offload_gb", v.cpu_offload_gb, 0.0, 1e6)
    c.int_min("vllm.max_input_tokens", v.max_input_tokens, 1)
    c.int_min("vllm.max_tokens", v.max_tokens, 1)
    if v.min_tokens is not None and not 0 <= v.min_tokens <= v.max_tokens:
        c.add("vllm.min_tokens", v.min_tokens, f"null or an integer in [0, vllm.max_tokens={v.max_tokens}]")
    c.num_range("vllm.temperature", v.temperature, 0.0, 100.0)
    c.num_range("vllm.top_p", v.top_p, 0.0, 1.0, lo_open=True)
    if v.top_k != -1 and v.top_k < 1:
        c.add("vllm.top_k", v.top_k, "-1 (off) or an integer >= 1")
