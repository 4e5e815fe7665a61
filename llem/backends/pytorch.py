"""transformers/PyTorch backend: static batches through `model.generate`, every prompt of the dataset.

Per-token timing uses a streamer whose `put` only appends `time.perf_counter()`: transformers already
moves each step's tokens to the CPU for the streamer, so timing adds no device sync of its own.
TTFT of a request is measured from the start of its batch (static batching).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

from llem.backends.base import Backend, RunOutput, Workload
from llem.config.schema import Decoding, ExperimentConfig, PytorchConfig
from llem.config.validate import ConfigError
from llem.measure.latency import Phase, RequestRecord
from llem.models import parameter_counts, resolve_model_path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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
        self.path = resolve_model_path(cfg)

    # -- load -------------------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = self.path
        m = self.cfg.model
        self.device = self.pt.device
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(
            m.tokenizer_id or path, revision=m.revision, trust_remote_code=m.trust_remote_code
        )
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, Any] = {
            "revision": m.revision,
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
        self._generate(ids, mask, n_new, None)
        self.sync()
        return time.perf_counter() - t0

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
                         extra={"latency_tracking": track,
                                "latency_note": None if track or not self.pt.latency_tracking
                                else "num_beams>1: transformers streams no tokens; TTFT/ITL unavailable"})

    # -- facts ------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def model_facts(self) -> dict[str, Any]:
        return {
            **parameter_counts(self.model),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": self.device,
            "architecture": type(self.model).__name__,
        }

    def memory(self) -> dict[str, Any]:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mem: dict[str, Any] = {"peak_rss_bytes": rss if sys.platform == "darwin" else rss * 1024}
        if self.device.startswith("cuda"):
            import torch

            mem["peak_allocated_bytes"] = {
                f"cuda:{i}": torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())
            }
            mem["peak_reserved_bytes"] = {
                f"cuda:{i}": torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())
            }
        return mem

    def devices(self) -> list[dict[str, Any]]:
        if not self.device.startswith("cuda"):
            return []
        import torch

        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"index": i, "name": p.name, "uuid": str(getattr(p, "uuid", "")),
                        "total_memory_bytes": p.total_memory})
        return out

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
