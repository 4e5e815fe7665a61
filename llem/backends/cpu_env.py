"""vLLM-on-CPU environment defaults, shared by the vllm backend and the openai backend's vLLM server (pure)."""

from __future__ import annotations

# vLLM on CPU sizes its KV cache from gpu_memory_utilization × the NUMA node's memory and refuses to
# start when that much is not free; llem gives it a fixed KV cache instead (GiB; the user's env wins).
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# Reported in the result (engine.env) when set: what vLLM on CPU ran with.
CPU_ENV_REPORTED = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
