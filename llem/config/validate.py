"""Range and cross-field checks of an experiment config, before any model loads (pure).

Type errors and unknown keys are caught earlier, by the structured schema at compose time. Every
message names the key, the value given and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llem.config.schema import BACKENDS, Decoding, ExperimentConfig, import_target
from llem.errors import ConfigError, UserError  # noqa: F401 (ConfigError: its old home)

ATTN = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CACHE_IMPLS = ("static", "dynamic", "offloaded", "offloaded_static", "sliding_window", "hybrid", "quantized")
ORDERS = ("sequential", "interleaved", "shuffled")
METERS = ("auto", "none", "nvml", "amdsmi", "rapl", "zeus", "codecarbon")
FAULTS = ("none", "raise", "exit", "segfault", "sigkill", "sleep")
DATASETS = ("synthetic", "aienergyscore", "jsonl", "csv", "hf")
KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Checks:
    def __init__(self) -> None:
        self.problems: list[tuple[str, Any, str]] = []

    def add(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append((key, value, allowed))

    def int_min(self, key: str, value: int, lo: int) -> None:
        if value < lo:
            self.add(key, value, f"an integer >= {lo}")

    def num_range(self, key: str, value: float | None, lo: float, hi: float, lo_open: bool = False,
                  optional: bool = False) -> None:
        if value is None:
            if not optional:
                self.add(key, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")
            return
        if value < lo or value > hi or (lo_open and value == lo):
            self.add(key, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")

    def one_of(self, key: str, value: Any, allowed: Iterable[Any], optional: bool = False) -> None:
        allowed = tuple(allowed)
        if value is None and optional:
            return
        if value not in allowed:
            extra = " or null" if optional else ""
            self.add(key, value, f"one of {', '.join(map(str, allowed))}{extra}")


def problems(cfg: ExperimentConfig) -> list[tuple[str, Any, str]]:
    c = _Checks()
    c.int_min("n", cfg.n, 1)
    c.one_of("backend", cfg.backend, BACKENDS)
    for name in BACKENDS:
        section = getattr(cfg, name)
        if name == cfg.backend and section is None:
            c.add(name, None, f"a `{name}:` section (select it with backend={name})")
        elif name != cfg.backend and section is not None:
            c.add(f"{name}.*", "(set)", f"only with backend={name}; this job has backend={cfg.backend}")
    spec = BACKENDS.get(cfg.backend)
    if spec is not None and spec.checks and getattr(cfg, cfg.backend, None) is not None:
        import_target(spec.checks)(c, cfg)  # the backend's own range checks (registry: BackendSpec.checks)
    _check_scenario(c, cfg)
    _check_dataset(c, cfg)
    _check_rest(c, cfg)
    from llem.config import inputs  # n cap, serving knobs under offline, openai URL/command (issue 23)

    inputs.check(c, cfg)
    return c.problems


def _check_pytorch(c: _Checks, cfg: ExperimentConfig) -> None:
    pt = cfg.pytorch
    if pt is None or cfg.backend != "pytorch":
        return
    c.int_min("pytorch.batch_size", pt.batch_size, 1)
    if not _DEVICE.match(pt.device):
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


def _check_vllm(c: _Checks, cfg: ExperimentConfig) -> None:
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


def _check_scenario(c: _Checks, cfg: ExperimentConfig) -> None:
    s = cfg.scenario
    c.one_of("scenario", s.name, ("offline", "serving"))
    spec = BACKENDS.get(cfg.backend)
    if spec is not None and s.name in ("offline", "serving") and s.name not in spec.scenarios():
        c.add("scenario", s.name, f"{' or '.join(spec.scenarios())} with backend={cfg.backend} "
              f"(backends with scenario={s.name}: {', '.join(n for n, b in BACKENDS.items() if s.name in b.scenarios())})")
    if s.name != "serving":
        return
    from llem.serving.checks import check_serving  # the serving knobs' checks, the trace file's included

    for key, value, allowed in check_serving(s):
        c.add(key, value, allowed)


def _check_dataset(c: _Checks, cfg: ExperimentConfig) -> None:
    d = cfg.dataset
    c.one_of("dataset.name", d.name, DATASETS)
    c.int_min("dataset.input_tokens", d.input_tokens, 1)
    if d.name in ("jsonl", "csv") or (d.name == "aienergyscore" and d.path):
        if not d.path:
            c.add("dataset.path", d.path, f"a {d.name} file path (dataset={d.name} reads a local file)")
        elif Path(d.path).expanduser().is_dir():
            c.add("dataset.path", d.path, f"a {d.name} file, not a directory")
        elif not Path(d.path).expanduser().is_file():
            c.add("dataset.path", d.path, "an existing file (no such file)")
    if d.name == "hf" and not d.hub_id:
        c.add("dataset.hub_id", d.hub_id, "a Hub dataset id such as tatsu-lab/alpaca")


def _check_rest(c: _Checks, cfg: ExperimentConfig) -> None:
    w = cfg.warmup
    c.one_of("warmup.mode", w.mode, ("fixed", "cv"))
    c.int_min("warmup.n_batches", w.n_batches, 0)
    c.int_min("warmup.max_batches", w.max_batches, max(w.n_batches, 1))
    c.num_range("warmup.cv_threshold", w.cv_threshold, 0.0, 10.0, lo_open=True)
    c.int_min("warmup.cv_window", w.cv_window, 2)
    if w.max_output_tokens is not None:
        c.int_min("warmup.max_output_tokens", w.max_output_tokens, 1)
    e = cfg.energy
    c.one_of("energy.meter", e.meter, METERS)
    c.num_range("energy.sample_hz", e.sample_hz, 0.0, 1000.0, lo_open=True)
    c.num_range("energy.baseline_s", e.baseline_s, 0.0, 3600.0)
    c.num_range("energy.thermal_warmup_s", e.thermal_warmup_s, 0.0, 3600.0)
    from llem.energy.meters.node.config import problems as node_problems  # pure: no client imported

    c.problems.extend(node_problems(e))  # energy.node.* (BMC node power) and energy.basis
    s = cfg.study
    c.int_min("study.n_cycles", s.n_cycles, 1)
    c.one_of("study.order", s.order, ORDERS)
    c.int_min("study.max_jobs", s.max_jobs, 1)
    for key in ("config_gap_seconds", "cycle_gap_seconds"):
        value = getattr(s, key)
        if value is not None and value < 0:
            c.add(f"study.{key}", value, "null or a number >= 0")
    if s.objective is not None:  # result fields with min/max (llem/search/objective.py)
        from llem.search.objective import problems as objective_problems

        for problem in objective_problems(s.objective):
            c.add(*problem)
    c.one_of("tracking.name", cfg.tracking.name, ("none", "mlflow"))  # llem/search/tracking.py
    c.one_of("debug.fault", cfg.debug.fault, FAULTS)
    from llem.gpu.checks import check_gpu_config, check_study_gaps  # gpu.* and study.gaps/cool (issue 20)

    check_gpu_config(c, cfg)
    check_study_gaps(c, cfg)


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError listing every problem; return cfg unchanged when valid."""
    from llem.extras import check_config as check_extras

    check_extras(cfg)  # a missing optional package (backend, meter, dataset): MissingExtra, its pip line
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg
