"""vLLM-on-CPU environment defaults, shared by the vllm backend and the openai backend's vLLM server (pure)."""

from __future__ import annotations

CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}
CPU_ENV_REPORTED = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
