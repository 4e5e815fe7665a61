"""Typed schema of one llem experiment: the structured configs behind every `conf/` group.

Pure dataclasses (no Hydra, no torch). `llem/config/store.py` registers them in Hydra's ConfigStore,
so a typo or a wrong type fails at compose time; `llem/config/validate.py` checks ranges and
cross-field rules before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Decoding(str, Enum):
    greedy = "greedy"
    sample = "sample"


@dataclass
class ModelConfig:
    """Which weights to load. `builtin` names a tiny model llem builds locally (no network)."""

    id: str = "llem/tiny-gpt2"
    revision: str | None = None  # pin a Hub commit/tag for reproducible studies
    builtin: str | None = None  # tiny-gpt2 | tiny-llama: built once into the cache folder
    tokenizer_id: str | None = None  # defaults to `id`
    trust_remote_code: bool = False
    cache_dir: str | None = None  # defaults to $LLEM_CACHE or ~/.cache/llem


@dataclass
class DatasetConfig:
    """Where the prompts come from. `name` selects the loader in llem/datasets/."""

    name: str = "synthetic"  # synthetic | aienergyscore | jsonl | csv | hf
    path: str | None = None  # local file (jsonl/csv, or aienergyscore offline copy)
    column: str | None = None  # prompt column; detected among prompt/text/instruction/input/question
    input_tokens: int = 64  # synthetic: prompt length in tokens
    hub_id: str | None = None  # hf/aienergyscore: Hub dataset id
    hub_config: str | None = None
    split: str = "train"
    shuffle: bool = False  # order as-is, or shuffled with `seed`


@dataclass
class WarmupConfig:
    """Warmup before the window: a fixed number of batches, or until latency's CV settles (bounded)."""

    mode: str = "fixed"  # fixed | cv
    n_batches: int = 2  # fixed mode: batches run; cv mode: minimum batches
    max_batches: int = 10  # cv mode: upper bound
    cv_threshold: float = 0.05  # cv mode: stop once CV of the last `cv_window` latencies is below this
    cv_window: int = 3
    max_output_tokens: int | None = None  # shorter warmup generations; null = same as measured


@dataclass
class EnergyConfig:
    """Energy meters around the measurement window (`energy=auto|none|...`)."""

    meter: str = "auto"  # auto | none | nvml | rapl | zeus | codecarbon
    reason: str | None = None  # none: why energy is not measured (recorded in the result)
    sample_hz: float = 10.0  # power sampler rate where the meter samples
    rapl_root: str = "/sys/class/powercap"  # RAPL sysfs root (override for containers and tests)
    gpu: bool = True  # auto: try GPU meters
    cpu: bool = True  # auto: try CPU meters
    gpu_indices: list[int] | None = None  # CUDA ordinals (after CUDA_VISIBLE_DEVICES) to measure; null = all
    baseline_s: float = 30.0  # idle power measured before model load; 0 = off
    baseline_ttl_s: float = 3600.0  # reuse a cached baseline younger than this
    thermal_warmup_s: float = 0.0  # run warmup until GPU temperature stops rising, at most this long; 0 = off
    thermal_plateau_s: float = 10.0  # thermal warmup: temperature counts as settled when it rose less
    thermal_tolerance_c: float = 1.0  # ... than this over the last thermal_plateau_s seconds
    country_iso_code: str = "USA"  # codecarbon offline tracker
    codecarbon_measure_power_s: float = 1.0  # codecarbon's own power polling interval
    extra: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class StudyConfig:
    """Settings of a study (multirun), read by llem's sweeper and launcher; never part of config_hash."""

    n_cycles: int = 1
    order: str = "interleaved"  # sequential | interleaved | shuffled
    shuffle_seed: int | None = None  # null: derived from the study design hash
    gaps: bool = True  # one-word switch: false turns both gaps off
    config_gap_seconds: float | None = None  # null: 60 s on GPU hosts, 0 on CPU-only hosts
    cycle_gap_seconds: float | None = None  # null: 300 s on GPU hosts, 0 on CPU-only hosts
    max_jobs: int = 200
    allow_over_max_jobs: bool = False
    dry_run: bool = False
    job_estimate_s: float = 60.0  # plan estimate per job never measured before (same config_hash)
    history_dir: str | None = None  # earlier results for estimates (searched recursively); null: multirun/ layout two levels above the sweep folder
    resume: bool = False
    timeout_s: float | None = None  # per-job limit (launcher): whole job process, start-up included; null/0 = none
    kill_grace_s: float = 10.0  # launcher: SIGTERM → SIGKILL delay when a job is stopped (timeout, Ctrl-C)
    on_unhealthy: str = "warn"  # warn | wait | abort (launcher health checks)
    health_max_memory_used_mib: float = 1024.0  # GPU memory in use before a job above this is unhealthy
    health_check_processes: bool = True  # a process not ours on the job's GPUs is unhealthy
    health_wait_max_s: float = 600.0  # on_unhealthy=wait: wait at most this long, then run with a warning
    health_poll_s: float = 10.0  # on_unhealthy=wait: re-check interval
    gpus_per_job: int = 0  # launcher GPU slots; 0 = one job at a time, no pinning
    progress: bool = True
    fresh_process: str = "auto"  # launcher: fork each job from a preloaded zygote | spawn a new interpreter | auto (fork on Linux)


@dataclass
class StudyJobConfig:
    """This job's place in a study; written by the sweeper, copied into the result."""

    cycle: int = 0
    config_hash: str | None = None
    study_design_hash: str | None = None
    index: int | None = None


@dataclass
class DebugConfig:
    """Test-only fault injection, run inside the job (see tests/test_launcher*)."""

    fault: str = "none"  # none | raise | exit | segfault | sigkill | sleep
    sleep_s: float = 0.0
    exit_code: int = 3


@dataclass
class ExperimentConfig:
    """One measured job. The `backend` group sets `backend` and fills its own section."""

    backend: str = "pytorch"
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    n: int = 16  # prompts used from the dataset
    precision: Precision = Precision.fp32
    seed: int = 0
    pytorch: PytorchConfig | None = None
    vllm: VllmConfig | None = None
    study: StudyConfig = field(default_factory=StudyConfig)
    study_job: StudyJobConfig = field(default_factory=StudyJobConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    save_requests: bool = True  # per-request latencies beside result.json (requests.jsonl)
    quiet: bool = False  # no summary print


BACKENDS: dict[str, type] = {"pytorch": PytorchConfig, "vllm": VllmConfig}

# Top-level keys that do not change what is measured: excluded from config_hash.
NON_MEASUREMENT_KEYS: tuple[str, ...] = ("study", "study_job", "hydra", "quiet", "save_requests")
# Nested settings that do not change what is measured either (where files are cached).
NON_MEASUREMENT_SUBKEYS: tuple[tuple[str, str], ...] = (("model", "cache_dir"),)
