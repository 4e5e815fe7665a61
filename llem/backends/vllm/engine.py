"""What vLLM's two engines share (`VllmEngineBackend`): engine-argument checks, the tokenizer, prompt
tokenization, the facts of what ran, memory, and process clean-up. The offline engine (`vllm.LLM`) is
backend.py, the async serving engine serving.py; each starts its engine and sends the requests.

Clean exit: vLLM starts an engine-core process (and worker processes under it). `close()` shuts the
engine down and then kills any process this backend started that is still alive (processes.py), so no
job leaves engine processes behind, whether it completed or failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from llem.backends.base import Backend, EngineInfo, Workload
from llem.backends.cpu_env import CPU_ENV_DEFAULTS, CPU_ENV_REPORTED
from llem.backends.facts import DeviceInfo, MemoryUsage, ModelFacts, peak_rss_self
from llem.backends.vllm.processes import descendants, kill_all, started_since
from llem.backends.vllm.timing import RequestTiming, peak_running
from llem.config.schema import ExperimentConfig, VllmConfig
from llem.errors import ConfigError
from llem.models import config_parameter_counts, parameters_check, resolve_sources
from llem.serving.server import peak_rss

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Engine arguments llem sets itself; `vllm.engine_args` may not override them.
RESERVED = {
    "model": "model.id", "tokenizer": "model.tokenizer_id", "revision": "model.revision",
    "tokenizer_revision": "model.tokenizer_revision", "trust_remote_code": "model.trust_remote_code",
    "dtype": "precision", "seed": "seed",
    "disable_log_stats": "nothing: llem needs vLLM's per-request stats for latency",
}
# VllmConfig knobs that are engine arguments (null = leave vLLM's default).
ENGINE_KNOBS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization", "block_size",
                "kv_cache_dtype", "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager",
                "tensor_parallel_size", "quantization", "swap_space", "cpu_offload_gb")


def check_engine_args(passthrough: dict[str, Any], accepted: set[str], version: str) -> list[tuple[str, Any, str]]:
    """Problems with `vllm.engine_args`: names vLLM does not accept, or that llem sets from a knob."""
    problems = []
    for key, value in passthrough.items():
        name = f"vllm.engine_args.{key}"
        if key in RESERVED:
            problems.append((name, value, f"unset: llem sets `{key}` from {RESERVED[key]}"))
        elif key in ENGINE_KNOBS or key in ("min_tokens", "max_tokens", "ignore_eos", "temperature", "top_p", "top_k"):
            problems.append((name, value, f"unset: use the knob vllm.{key}"))
        elif key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            listed = sorted(a for a in accepted - set(RESERVED) - set(ENGINE_KNOBS) if not a.startswith("_"))
            problems.append((name, value, f"an engine argument of vLLM {version}{hint}; accepted: "
                                          + ", ".join(listed)))
    return problems


# -- the backend -------------------------------------------------------------------------------------------
def _check_ray_importable() -> None:
    """vLLM imports ray whenever it is installed, here and in every engine process it spawns; a ray that
    cannot be imported (amdsmi installed without AMD's libamd_smi.so raises KeyError) kills them all."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        return  # vLLM treats an ImportError as "no ray"
    except Exception as e:
        raise RuntimeError(
            f"vLLM imports ray, and `import ray` fails here ({type(e).__name__}: {e}). The usual cause is the "
            "amdsmi package (a zeus dependency) without AMD's ROCm library: on a machine without AMD GPUs run "
            "`pip uninstall amdsmi` (zeus works without it), or `pip uninstall ray` if you do not use the "
            "ray launcher") from e


class VllmEngineBackend(Backend):
    """What both vLLM engines share: argument checks, tokenizer, prompt tokenization, facts, memory, process
    clean-up. A subclass starts its engine and sends the requests: `VllmBackend` below (offline, `vllm.LLM`),
    `VllmServingBackend` in serving.py (the async engine behind `vllm serve`)."""

    name = "vllm"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        assert cfg.vllm is not None
        self.v: VllmConfig = cfg.vllm
        self.engine: Any = None  # the vLLM engine object (start_engine)
        self.tokenizer: Any = None
        self.device = "cpu"
        self._facts: ModelFacts | None = None
        self._started: dict[int, Any] = {}  # processes the engine started (closed in close())
        # Imports, argument checks and a first-time tiny-model build happen here, before the timed load,
        # and every argument problem is reported before any weights load.
        _check_ray_importable()
        import vllm
        from vllm.platforms import current_platform

        self.vllm_version = vllm.__version__
        self.device = current_platform.device_type or "cpu"
        self.sources = resolve_sources(cfg)  # builtin built, Hub revision pinned to a commit: what loads
        self.path = self.sources.model.path
        self.engine_kwargs = self._engine_kwargs()
        if current_platform.is_cpu():
            self._check_cpu_head_size()

    # -- engine arguments -------------------------------------------------------------------------------
    def _accepted_engine_args(self) -> set[str]:
        import inspect

        from vllm import LLM
        from vllm.engine.arg_utils import EngineArgs

        llm_params = {p.name for p in inspect.signature(LLM.__init__).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        return {f.name for f in dataclasses.fields(EngineArgs)} | llm_params

    def _engine_kwargs(self) -> dict[str, Any]:
        v, m = self.v, self.cfg.model
        accepted = self._accepted_engine_args()
        problems = check_engine_args(dict(v.engine_args), accepted, self.vllm_version)
        kw: dict[str, Any] = {
            "model": self.path, "tokenizer": self.sources.tokenizer.path,
            "revision": self.sources.model.load_revision, "tokenizer_revision": self.sources.tokenizer.load_revision,
            "trust_remote_code": m.trust_remote_code, "dtype": DTYPES[self.cfg.precision.value],
            "seed": self.cfg.seed, "disable_log_stats": False,
        }
        for knob in ENGINE_KNOBS:
            value = getattr(v, knob)
            if value is None:
                continue
            if knob not in accepted:
                problems.append((f"vllm.{knob}", value, f"null: vLLM {self.vllm_version} has no engine argument `{knob}`"))
                continue
            kw[knob] = value
        kw.update(v.engine_args)
        problems += self.check_engine_kwargs(kw)
        if problems:
            raise ConfigError(problems)
        return kw

    def _check_cpu_head_size(self) -> None:
        """vLLM's CPU attention supports only some head sizes and says so only at the first generation."""
        try:
            from transformers import AutoConfig
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            supported = CPUAttentionBackend.get_supported_head_sizes()
            c = AutoConfig.from_pretrained(self.path, revision=self.sources.model.load_revision,
                                           trust_remote_code=self.cfg.model.trust_remote_code)
            head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        except Exception:  # an unusual config or another vLLM layout: let vLLM decide
            return
        if head not in supported:
            raise ConfigError([("model.id", self.cfg.model.id,
                                f"a model whose attention head size vLLM's CPU backend supports "
                                f"({', '.join(map(str, supported))}); this model's is {head}")])

    # -- what an engine subclass provides --------------------------------------------------------------
    @abstractmethod
    def start_engine(self) -> Any:
        """Start the engine from `self.engine_kwargs` and return it (kept in `self.engine`)."""

    @abstractmethod
    def vllm_config(self) -> Any:
        """The engine's resolved VllmConfig (model_config, cache_config, scheduler_config)."""

    @abstractmethod
    def sampling_params(self, max_tokens: int) -> Any:
        """The SamplingParams of a measured request generating up to `max_tokens` tokens."""

    def after_start(self) -> None:
        """After the engine started (outside the window): e.g. drop vLLM's periodic stat logger."""

    def render(self, prompts: list[dict[str, Any]]) -> list[Any]:
        """Token-id prompts as the engine takes them (rendered once, outside the window)."""
        return prompts

    def shutdown_engine(self, engine: Any) -> None:
        """Stop the engine; close() then kills whatever processes it left."""

    def check_engine_kwargs(self, kw: dict[str, Any]) -> list[tuple[str, Any, str]]:
        """Problems with the engine arguments for this engine class (key, value, allowed)."""
        return []

    def load(self) -> None:
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and "kv_cache_memory_bytes" not in self.engine_kwargs:
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        m = self.cfg.model
        tok = self.sources.tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(tok.path, revision=tok.load_revision,
                                                       trust_remote_code=m.trust_remote_code)
        before = set(descendants())
        try:
            self.engine = self.start_engine()
        finally:  # also when the engine fails to start: whatever it left running is ours to stop
            self._started = started_since(before)
        self.after_start()

    # -- workload ---------------------------------------------------------------------------------------
    def prepare(self, prompts: list[str]) -> Workload:
        enc = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        limit = self.v.max_input_tokens
        ids = [list(x[:limit]) for x in enc]
        empty = [i for i, x in enumerate(ids) if not x]
        if empty:
            raise ValueError(f"prompt {empty[0]} of the dataset has no tokens; vLLM needs at least one")
        max_len = self.vllm_config().model_config.max_model_len
        longest = max(len(x) for x in ids)
        if longest + self.v.max_tokens > max_len:
            raise ConfigError([("vllm.max_input_tokens", limit,
                                f"at most max_model_len - vllm.max_tokens = {max_len - self.v.max_tokens} "
                                f"(a prompt has {longest} tokens; the model's context is {max_len})")])
        return Workload(prompts=prompts, input_tokens=[len(x) for x in ids], batch_size=0,
                        truncated=sum(1 for x in enc if len(x) > limit), payload=self._engine_inputs(ids))

    def _engine_inputs(self, ids: list[list[int]]) -> list[Any]:
        """Rendered once here, outside the window (vLLM ≥0.1x renders prompts before add_request)."""
        prompts = [{"prompt_token_ids": x} for x in ids]
        return list(self.render(prompts))

    def _engine_info(self, timings: Sequence[RequestTiming]) -> EngineInfo:
        """What the engine resolved (vLLM fills many defaults) and what happened in the run."""
        vc = self.vllm_config()
        cache, sched = vc.cache_config, vc.scheduler_config
        reasons: dict[str, int] = {}
        for r in timings:
            reasons[str(r.finish_reason)] = reasons.get(str(r.finish_reason), 0) + 1
        spans = [(r.t_scheduled, r.t_end) for r in timings if r.t_scheduled is not None]
        return EngineInfo(
            vllm_version=self.vllm_version, device=self.device,
            max_num_seqs=sched.max_num_seqs, max_num_batched_tokens=sched.max_num_batched_tokens,
            max_model_len=vc.model_config.max_model_len, block_size=cache.block_size,
            kv_cache_blocks=getattr(cache, "num_gpu_blocks", None), kv_cache_dtype=str(cache.cache_dtype),
            enable_prefix_caching=cache.enable_prefix_caching,
            enable_chunked_prefill=getattr(sched, "enable_chunked_prefill", None),
            enforce_eager=vc.model_config.enforce_eager,
            peak_running_requests=peak_running(spans) if spans else None,
            prefix_cache_hit_tokens=sum(r.cached_tokens for r in timings),
            preemptions=None if any(r.preemptions is None for r in timings)
            else sum(r.preemptions or 0 for r in timings),
            finish_reasons=reasons,
            env={k: os.environ[k] for k in CPU_ENV_REPORTED if k in os.environ} if self.device == "cpu" else {},
        )

    # -- facts ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Nothing to do: run() returns only after the engine sent every request's last token, which the
        worker copies to the host after its device work. (torch.cuda.synchronize() here would only sync
        this frontend process — and create a CUDA context in it — never the worker's queue.)"""

    def model_facts(self) -> ModelFacts:
        """What ran. The weights live in the engine's worker process, so counts come from the config the
        engine built its model from (meta device), checked against the source's own config.json; the
        engine's model path and revision are recorded beside the source llem resolved."""
        if self._facts is None:
            m, src = self.cfg.model, self.sources.model
            claimed = config_parameter_counts(src.path, src.load_revision, m.trust_remote_code)
            facts = ModelFacts()
            facts.set(**claimed, dtype=None, device=self.device, source=src.record(),
                      tokenizer={**self.sources.tokenizer.record(), "class": type(self.tokenizer).__name__})
            if self.engine is not None:
                vc = self.vllm_config()
                mc = vc.model_config
                backend = getattr(getattr(vc, "attention_config", None), "backend", None)
                facts.set(
                    dtype=str(mc.dtype).replace("torch.", ""),
                    attn_implementation=getattr(backend, "name", None) or f"auto ({self.device} platform default)",
                    engine_model={"model": mc.model, "revision": mc.revision, "tokenizer": mc.tokenizer,
                                  "tokenizer_revision": getattr(mc, "tokenizer_revision", None)},
                )
                try:  # after the window: a fact that cannot be read is recorded as such, never fails the job
                    engine_counts = config_parameter_counts(mc.hf_config, trust_remote_code=m.trust_remote_code)
                    facts.set(**engine_counts)
                    facts.set(parameters_check=parameters_check(engine_counts, claimed,
                                                                f"a meta-device build of {src.id}'s config"))
                except Exception as e:
                    facts.set(parameters_check={"ok": None, "note": f"engine config not countable: {e}"})
                try:
                    facts.set(generation=self.applied_sampling())
                except Exception as e:
                    facts.set(generation={"mode": None, "note": f"sampling params unavailable: {e}"})
            self._facts = facts
        return self._facts

    SAMPLING_KEYS = ("n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "seed", "max_tokens", "min_tokens", "ignore_eos", "stop", "stop_token_ids",
                     "bad_words", "logprobs", "detokenize", "skip_special_tokens")

    def applied_sampling(self) -> dict[str, Any]:
        """The SamplingParams of the measured pass after vLLM's own merge (its input processor adds the
        model generation_config's EOS ids as stop tokens), and what that generation_config suggests for
        sampling (`model_defaults`: vLLM applies them only to requests without explicit params; llem's
        requests always carry them)."""
        p = self.sampling_params(self.v.max_tokens).clone()
        mc = self.vllm_config().model_config
        with contextlib.suppress(Exception):  # as vllm/v1/engine/input_processor.py does per request
            p.update_from_generation_config(mc.try_get_generation_config(), self.tokenizer.eos_token_id)
        applied = {k: getattr(p, k, None) for k in self.SAMPLING_KEYS}
        applied["output_kind"] = getattr(p.output_kind, "name", str(p.output_kind))
        greedy = p.temperature is not None and p.temperature < 1e-5  # vLLM's _SAMPLING_EPS
        defaults: dict[str, Any] | None = None
        with contextlib.suppress(Exception):
            defaults = dict(mc.get_diff_sampling_param())
        return {"mode": "greedy" if greedy else "sample", "applied": applied, "model_defaults": defaults}

    def memory(self) -> MemoryUsage:
        engine = {}
        for pid, proc in self._started.items():
            peak = peak_rss(pid)
            if peak is not None:
                with contextlib.suppress(Exception):
                    engine[f"{proc.name()}-{pid}"] = peak
        mem = MemoryUsage(peak_rss_self(), engine_peak_rss_bytes=engine)
        if self.engine is not None:
            cache = self.vllm_config().cache_config
            blocks = getattr(cache, "num_gpu_blocks", None)
            mem.kv_cache_tokens = blocks * cache.block_size if blocks and cache.block_size else None
            mem.kv_cache_read = True
        return mem

    def devices(self) -> list[DeviceInfo]:
        if self.device != "cuda":
            return []
        from vllm.platforms import current_platform

        out = []
        for i in range(self.v.tensor_parallel_size):
            info = DeviceInfo(i)
            for key, fn in (("name", "get_device_name"), ("uuid", "get_device_uuid"),
                            ("total_memory_bytes", "get_device_total_memory")):
                with contextlib.suppress(Exception):
                    setattr(info, key, getattr(current_platform, fn)(i))
            out.append(info)
        return out

    # -- exit -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the engine down, then kill whatever it started that is still alive (also after failures)."""
        engine, self.engine = self.engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                self.shutdown_engine(engine)
            del engine
        kill_all(self._started)
        self._started.clear()
