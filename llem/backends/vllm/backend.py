"""vLLM backend: the offline engine (`vllm.LLM`); every prompt is submitted at once and batched continuously.

Latency is vLLM's own per-request timing on the measured pass (`RequestOutput.metrics`, vLLM's
`RequestStateStats`): arrival (frontend, `time.time()`), then scheduled / first token / last token
(engine core, `time.monotonic()`, stamped when the step that produced them finished). With
`vllm.token_timestamps` (default) llem streams each engine step's new tokens (DELTA outputs) and gives
every token its step's engine-core time: TTFT, ITL per step, e2e. Without it, vLLM's per-request stats
alone give TTFT, mean ITL and e2e. No prefill-only proxy run is ever made.

Clocks: records use `time.perf_counter()` like the measurement window. Engine-core times are
CLOCK_MONOTONIC, the same clock as perf_counter on Linux (offset exactly 0); elsewhere, and for the
wall-clock arrival time, the offset to perf_counter is sampled in this process just before the run
(tightest of a few bracketed reads, error < a few µs).

Steady state (`vllm.steady_state`, the ML.ENERGY method): the span while `max_num_seqs` requests are
running — from the schedule instant at which the batch first fills to the last engine step that still
ran a full batch (after it, the queue is empty and the batch drains) — from per-request timestamps
(pure analysis in timing.py).

What does not depend on the engine class (argument checks, tokenizer, facts, memory, clean exit) is
`VllmEngineBackend` in engine.py, shared with the serving engine (serving.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import RunOutput, Workload
from llem.backends.vllm.engine import (  # noqa: F401  (older import paths)
    DTYPES,
    ENGINE_KNOBS,
    RESERVED,
    VllmEngineBackend,
    check_engine_args,
)
from llem.backends.vllm.timing import Clocks, RequestTiming, request_phases, steady_state_block


class VllmBackend(VllmEngineBackend):
    """The offline engine (`vllm.LLM`): every prompt is submitted at once, the engine stepped until done."""

    # -- load -------------------------------------------------------------------------------------------
    @property
    def llm(self) -> Any:
        """The `vllm.LLM` (the engine)."""
        return self.engine

    def start_engine(self) -> Any:
        from vllm import LLM

        return LLM(**self.engine_kwargs)

    def after_start(self) -> None:
        # Per-request stats stay on (they are the latency source); vLLM's periodic stat logger and its
        # Prometheus bookkeeping run in this process on every step, so they go: nothing of ours logs
        # inside the measurement window.
        engine = self.llm.llm_engine
        if getattr(engine, "logger_manager", None) is not None:
            engine.logger_manager = None

    def vllm_config(self) -> Any:
        return self.llm.llm_engine.vllm_config

    def render(self, prompts: list[dict[str, Any]]) -> list[Any]:
        render = getattr(self.llm, "_preprocess_cmpl", None)  # vLLM >= 0.1x renders prompts before add_request
        return list(render(prompts)) if render is not None else prompts

    def shutdown_engine(self, engine: Any) -> None:
        engine.llm_engine.engine_core.shutdown()

    def sampling_params(self, max_tokens: int) -> Any:
        return self._params(max_tokens)

    def _params(self, max_tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        v = self.v
        min_tokens = v.min_tokens or 0
        return SamplingParams(
            max_tokens=max_tokens, min_tokens=min(min_tokens, max_tokens), ignore_eos=v.ignore_eos,
            temperature=v.temperature, top_p=v.top_p, top_k=v.top_k, detokenize=False,
            output_kind=RequestOutputKind.DELTA if v.token_timestamps else RequestOutputKind.FINAL_ONLY)

    def _generate(self, inputs: Sequence[Any], max_tokens: int, tag: str) -> tuple[list[Any], list[Any]]:
        """Submit every input, step the engine until all finish. Returns (finished outputs, stream log)
        where the log holds (request id, new tokens, engine-core step time) per streamed output."""
        engine = self.llm.llm_engine
        params = self._params(max_tokens)
        for i, inp in enumerate(inputs):
            item = dict(inp) if isinstance(inp, dict) else inp
            engine.add_request(f"{tag}{i}", item, params, arrival_time=time.time())
        finished: list[Any] = []
        log: list[tuple[str, int, float | None]] = []
        stream = self.v.token_timestamps
        while engine.has_unfinished_requests():
            for out in engine.step():
                if stream:  # read now: metrics is updated in place on the next step
                    log.append((out.request_id, len(out.outputs[0].token_ids),
                                out.metrics.last_token_ts if out.metrics is not None else None))
                if out.finished:
                    finished.append(out)
        return finished, log

    def warmup_step(self, workload: Workload) -> float:
        """One full batch (up to max_num_seqs prompts) through the same path as the measured run."""
        n_new = self.cfg.warmup.max_output_tokens or self.v.max_tokens
        inputs = workload.payload[: self.v.max_num_seqs]
        t0 = time.perf_counter()
        self._generate(inputs, n_new, "warmup-")
        latency = time.perf_counter() - t0
        # The measured pass must not find its prompts' KV in the prefix cache because warmup ran them.
        self.llm.reset_prefix_cache()
        return latency

    def run(self, workload: Workload) -> RunOutput:
        clocks = Clocks.sample()
        finished, log = self._generate(workload.payload, self.v.max_tokens, "")
        # Bookkeeping after the engine has finished: nothing but add/step runs inside the window.
        timings = self._timings(finished, log, workload, clocks)
        records = [t.record() for t in timings]
        out = RunOutput(records=records, phases=request_phases(timings), engine=self._engine_info(timings),
                        latency_method=("vLLM per-request stats + per-step token timestamps (engine core clock)"
                                        if self.v.token_timestamps else "vLLM per-request stats (engine core clock)"))
        if not self.v.token_timestamps:
            out.latency_note = "vllm.token_timestamps=false: per-step ITL unavailable (TTFT, mean ITL, e2e only)"
        if self.v.steady_state:
            out.steady_state, out.steady_state_note = steady_state_block(timings, self.v.max_num_seqs)
        return out

    def _timings(self, finished: list[Any], log: list[tuple[str, int, float | None]], workload: Workload,
                 clocks: Clocks) -> list[RequestTiming]:
        mono, wall = clocks.monotonic_to_perf_s, clocks.wall_to_perf_s
        streamed: dict[str, list[float]] = {}
        for rid, n_new, t in log:
            if t is not None:
                streamed.setdefault(rid, []).extend([t + mono] * n_new)
        timings = []
        for out in finished:
            i = int(out.request_id)
            s = out.metrics
            if s is None:
                raise RuntimeError(f"vLLM {self.vllm_version} returned no per-request stats (RequestOutput.metrics): "
                                   "llem needs vLLM >= 0.11.0 (V1 fills them since PR 24947) with log stats on")
            n_out = s.num_generation_tokens or len(out.outputs[0].token_ids)
            times = streamed.get(out.request_id, [])
            timings.append(RequestTiming(
                index=i, input_tokens=workload.input_tokens[i], output_tokens=n_out if not times else len(times),
                t_arrival=s.arrival_time + wall,
                t_scheduled=s.scheduled_ts + mono if getattr(s, "scheduled_ts", None) else None,
                t_first_token=s.first_token_ts + mono if getattr(s, "first_token_ts", None) else None,
                t_end=s.last_token_ts + mono, token_times=times,
                cached_tokens=getattr(out, "num_cached_tokens", None) or 0,
                preemptions=getattr(s, "num_preemptions", None),  # newer than RequestOutput.metrics
                finish_reason=out.outputs[0].finish_reason))
        timings.sort(key=lambda r: r.index)
        if len(timings) != len(workload.payload):
            raise RuntimeError(f"vLLM finished {len(timings)} of {len(workload.payload)} requests")
        return timings
