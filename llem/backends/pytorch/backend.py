"""transformers/PyTorch backend: static batches through `model.generate`, every prompt of the dataset.

Per-token timing uses a streamer whose `put` only appends `time.perf_counter()`: transformers already
moves each step's tokens to the CPU for the streamer, so timing adds no device sync of its own.
TTFT of a request is measured from the start of its batch (static batching).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from llem.backends.base import Backend, RunOutput, Workload
from llem.backends.facts import DeviceInfo, MemoryUsage, ModelFacts, peak_rss_self
from llem.config.schema import Decoding, ExperimentConfig, PytorchConfig
from llem.errors import ConfigError
from llem.measure.latency import Phase, RequestRecord
from llem.models import (
    config_parameter_counts,
    dtype_counts,
    parameter_counts,
    parameters_check,
    resolve_sources,
)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
STATIC_CACHES = ("static", "offloaded_static")  # transformers' STATIC_CACHE_IMPLEMENTATIONS (compileable)


def _compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has built in this process so far."""
    dynamo_utils = sys.modules.get("torch._dynamo.utils")  # not imported: nothing was compiled
    return 0 if dynamo_utils is None else int(dynamo_utils.counters["stats"]["unique_graphs"])


class _TokenTimes:
    """A transformers streamer that records when each generation step's tokens reach the CPU."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt ids
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class PytorchBackend(Backend):
    name = "pytorch"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        assert cfg.pytorch is not None
        self.pt: PytorchConfig = cfg.pytorch
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: str = "cpu"
        # Imports and a first-time tiny-model build happen here, so `timing.load_s` is the load alone.
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        quant = "pytorch.load_in_4bit" if self.pt.load_in_4bit else "pytorch.load_in_8bit" if self.pt.load_in_8bit else None
        if quant and not torch.cuda.is_available():  # device=cpu/mps is refused by validation already
            raise ConfigError([(quant, True, "false on a host without a CUDA GPU (bitsandbytes quantization)")])
        self.sources = resolve_sources(cfg)  # builtin built, Hub revision pinned to a commit: what loads
        self.path = self.sources.model.path
        self._shape_batches: dict[tuple[int, int], int] = {}  # (batch size, padded length) -> first batch
        self._warmed_shapes: list[tuple[int, int]] = []
        self._graphs_before_window: int | None = None

    # -- load -------------------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = self.path
        m = self.cfg.model
        tok = self.sources.tokenizer
        self.device = self.pt.device
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(
            tok.path, revision=tok.load_revision, trust_remote_code=m.trust_remote_code
        )
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, Any] = {
            "revision": self.sources.model.load_revision,  # the resolved commit (Hub), None for folders
            "trust_remote_code": m.trust_remote_code,
            "dtype": getattr(torch, DTYPES[self.cfg.precision.value]),
        }
        if self.pt.attn_implementation:
            kwargs["attn_implementation"] = self.pt.attn_implementation
        if self.pt.load_in_4bit or self.pt.load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=self.pt.load_in_4bit, load_in_8bit=self.pt.load_in_8bit
            )
        if self.pt.device_map:
            kwargs["device_map"] = self.pt.device_map
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if not self.pt.device_map and not (self.pt.load_in_4bit or self.pt.load_in_8bit):
            self.model.to(self.device)
        self.model.eval()
        if self.pt.torch_compile:
            self.model.forward = torch.compile(self.model.forward, mode=self.pt.torch_compile_mode)
        self.sync()

    # -- workload ---------------------------------------------------------------------------------
    def prepare(self, prompts: list[str]) -> Workload:
        enc = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        limit = self.pt.max_input_tokens
        ids = [x[:limit] for x in enc]
        truncated = sum(1 for x in enc if len(x) > limit)
        bs = self.pt.batch_size
        batches = []
        for start in range(0, len(ids), bs):
            chunk = ids[start : start + bs]
            padded = self.tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")
            batches.append((start, padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)))
        self._plan_compile_shapes(batches)
        return Workload(prompts=prompts, input_tokens=[len(x) for x in ids], batch_size=bs,
                        truncated=truncated, payload=batches)

    def _gen_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        pt = self.pt
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "num_beams": pt.num_beams,
            "use_cache": pt.use_cache,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": pt.decoding == Decoding.sample,
        }
        if pt.fixed_length:
            kw["min_new_tokens"] = max_new_tokens  # EOS is suppressed until the last token
        if pt.decoding == Decoding.sample:
            kw.update(temperature=pt.temperature, top_k=pt.top_k, top_p=pt.top_p)
        else:  # silence "sampling flags set but do_sample=False" from models' generation_config
            kw.update(temperature=None, top_k=None, top_p=None)
        if pt.cache_implementation:
            kw["cache_implementation"] = pt.cache_implementation
        return kw

    def _generate(self, input_ids: Any, attention_mask: Any, max_new_tokens: int,
                  streamer: _TokenTimes | None) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                       streamer=streamer, **self._gen_kwargs(max_new_tokens))

    def warmup_step(self, workload: Workload) -> float:
        _, ids, mask = workload.payload[0]
        n_new = self.cfg.warmup.max_output_tokens or self.pt.max_output_tokens
        t0 = time.perf_counter()
        self._warm_compiled_shapes(workload)
        self._generate(ids, mask, n_new, None)
        self.sync()
        self._graphs_before_window = _compiled_graphs()  # read outside the window, compared after it
        return time.perf_counter() - t0

    # -- compilation: every shape the window runs is compiled before it ---------------------------
    def compile_reason(self) -> str | None:
        """Why generate() runs compiled code, so each new input shape would compile (None: eager)."""
        if self.pt.torch_compile:
            return "pytorch.torch_compile=true"
        if self.pt.cache_implementation in STATIC_CACHES and self.device.startswith("cuda"):
            # transformers' _valid_auto_compile_criteria: a compileable cache on CUDA compiles decode
            return f"pytorch.cache_implementation={self.pt.cache_implementation} on CUDA (transformers compiles decode)"
        return None

    def _plan_compile_shapes(self, batches: list[Any]) -> None:
        """The distinct (batch size, padded length) the window will run, first batch of each."""
        self._shape_batches = {}
        for b, (_, ids, _) in enumerate(batches):
            self._shape_batches.setdefault((int(ids.shape[0]), int(ids.shape[1])), b)
        self._warmed_shapes = []

    def _warm_compiled_shapes(self, workload: Workload) -> None:
        """Compiled runs: one generate per not-yet-warmed shape, with the window's own arguments
        (max_output_tokens sizes a static cache), so no graph is compiled inside the window."""
        if self.compile_reason() is None:
            return
        for shape, b in self._shape_batches.items():
            if shape in self._warmed_shapes:
                continue
            _, ids, mask = workload.payload[b]
            self._generate(ids, mask, self.pt.max_output_tokens, None)
            self._warmed_shapes.append(shape)

    def compile_report(self) -> dict[str, Any] | None:
        """After the window: the shapes warmed and graphs compiled inside the window (should be 0)."""
        reason = self.compile_reason()
        if reason is None:
            return None
        after = _compiled_graphs()
        before = self._graphs_before_window
        inside = None if before is None else after - before
        block: dict[str, Any] = {
            "reason": reason, "mode": self.pt.torch_compile_mode,
            "shapes_in_window": [list(s) for s in self._shape_batches],
            "shapes_warmed": [list(s) for s in self._warmed_shapes],
            "graphs_compiled_in_window": inside, "warnings": [],
        }
        if before is None:
            block["warnings"].append(f"{reason}: no warmup ran (warmup.n_batches=0), so compilation happened "
                                     "inside the measurement window; time and energy include it")
        elif inside:
            block["warnings"].append(f"{reason}: {inside} graph(s) compiled inside the measurement window "
                                     "(a recompile: time and energy include compilation)")
        return block

    def _output_lengths(self, new_tokens: Any) -> list[int]:
        """Generated tokens per row, up to and including the first EOS (the rest is padding)."""
        n_new = new_tokens.shape[1]
        if self.pt.fixed_length:
            return [n_new] * new_tokens.shape[0]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        lengths = []
        for row in new_tokens.tolist():
            k = next((i + 1 for i, t in enumerate(row) if t in eos_ids), n_new)
            lengths.append(k)
        return lengths

    def run(self, workload: Workload) -> RunOutput:
        import torch

        torch.manual_seed(self.cfg.seed)
        track = self.pt.latency_tracking and self.pt.num_beams == 1
        records: list[RequestRecord] = []
        phases: list[Phase] = []
        outputs = []
        for b, (start, ids, mask) in enumerate(workload.payload):
            streamer = _TokenTimes() if track else None
            t0 = time.perf_counter()
            out = self._generate(ids, mask, self.pt.max_output_tokens, streamer)
            self.sync()
            t1 = time.perf_counter()
            outputs.append((b, start, t0, t1, out[:, ids.shape[1] :], streamer))
        # Bookkeeping after the loop keeps per-batch work inside the window to generate() alone.
        for b, start, t0, t1, new_tokens, streamer in outputs:
            times = streamer.times if streamer else []
            first = times[0] if times else None
            phases.append(Phase(t_start=t0, t_first_token=first, t_end=t1))
            for j, n_out in enumerate(self._output_lengths(new_tokens)):
                t_end = times[n_out - 1] if len(times) >= n_out else t1
                records.append(RequestRecord(
                    index=start + j, input_tokens=workload.input_tokens[start + j], output_tokens=n_out,
                    t_submit=t0, t_first_token=first, t_end=t_end, batch=b, token_times=times,
                ))
        return RunOutput(records=records, phases=phases,
                         latency_method="perf_counter per streamed token (transformers streamer)" if track else
                         "perf_counter around each batch's generate()",
                         latency_note=None if track or not self.pt.latency_tracking
                         else "num_beams>1: transformers streams no tokens; TTFT/ITL unavailable")

    # -- facts ------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def model_facts(self) -> ModelFacts:
        """What ran: the weights' and tokenizer's resolved sources, the dtypes the parameters hold, the
        attention implementation, the generation settings generate() applied, torch's CPU threads, and
        the loaded parameter count checked against a meta-device build from the source's config."""
        import torch

        counts = parameter_counts(self.model)
        dtypes = dtype_counts(self.model)
        src = self.sources.model  # the claim, built from the source's own config.json on the meta device
        try:
            check = parameters_check(counts, config_parameter_counts(src.path, src.load_revision,
                                                                     self.cfg.model.trust_remote_code),
                                     f"a meta-device build of {src.id}'s config")
        except Exception as e:  # after the window: recorded, never a failed job
            check = {"ok": None, "note": f"{src.id}'s config not countable on the meta device: {e}"}
        facts = ModelFacts()
        facts.set(
            **counts,
            dtype=next(iter(dtypes)),  # the dtype holding the most parameters
            dtypes=dtypes,
            device=self.device,
            architecture=type(self.model).__name__,
            attn_implementation=getattr(self.model.config, "_attn_implementation", None),
            source=self.sources.model.record(),
            tokenizer={**self.sources.tokenizer.record(), "class": type(self.tokenizer).__name__},
            generation=self.applied_generation(),
            torch_threads=torch.get_num_threads(),
            parameters_check=check,
        )
        return facts

    # Generation settings that decide what generate() computes (recorded as applied, after the merge).
    GENERATION_KEYS = ("max_new_tokens", "min_new_tokens", "max_length", "min_length", "do_sample", "num_beams",
                       "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                       "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "early_stopping",
                       "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                       "forced_eos_token_id", "sequence_bias", "renormalize_logits", "stop_strings",
                       "eos_token_id", "pad_token_id", "bos_token_id", "use_cache", "cache_implementation",
                       "num_return_sequences")
    SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")

    def applied_generation(self) -> dict[str, Any]:
        """The GenerationConfig generate() builds for the measured call (llem's kwargs over the model's
        generation_config over transformers' defaults), its decoding mode, and what the model's own
        generation_config asked for (`model_defaults`); sampling knobs are null when not sampling."""
        kwargs = self._gen_kwargs(self.pt.max_output_tokens)
        model_defaults = {k: v for k, v in self.model.generation_config.to_diff_dict().items()
                          if k != "transformers_version"}
        try:
            gc, _ = self.model._prepare_generation_config(None, **kwargs)  # the call generate() makes
            mode = str(getattr(gc.get_generation_mode(), "value", gc.get_generation_mode()))
        except Exception as e:  # a transformers without these internals: llem's kwargs, marked as such
            return {"mode": None, "applied": dict(kwargs), "model_defaults": model_defaults,
                    "note": f"merged settings unavailable ({type(e).__name__}: {e}); `applied` = llem's kwargs only"}
        applied = {k: getattr(gc, k, None) for k in self.GENERATION_KEYS}
        for new, total in (("max_new_tokens", "max_length"), ("min_new_tokens", "min_length")):
            if applied[new] is not None:  # generate() uses the *_new_tokens limit; the total is unused
                applied[total] = None
        if not gc.do_sample:
            applied.update(dict.fromkeys(self.SAMPLING_ONLY))
        out = {"mode": mode, "applied": applied, "model_defaults": model_defaults}
        try:  # as result.json will hold it (lists, not tuples; objects as text)
            return json.loads(json.dumps(out, default=str))
        except (TypeError, ValueError):  # a dict with non-string keys (e.g. sequence_bias): those keys go
            return json.loads(json.dumps(out, default=str, skipkeys=True))

    def memory(self) -> MemoryUsage:
        mem = MemoryUsage(peak_rss_self())
        if self.device.startswith("cuda"):
            import torch

            mem.peak_allocated_bytes = {
                f"cuda:{i}": torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())
            }
            mem.peak_reserved_bytes = {
                f"cuda:{i}": torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())
            }
        return mem

    def devices(self) -> list[DeviceInfo]:
        if not self.device.startswith("cuda"):
            return []
        import torch

        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(i, p.name, str(getattr(p, "uuid", "")), p.total_memory))
        return out

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
