"""vLLM serving scenario: the in-process async engine (`vllm.v1.engine.async_llm.AsyncLLM`, the engine
behind `vllm serve`) fed by llem's arrival process (`scenario=serving`).

Each request is handed to `AsyncLLM.generate` at its scheduled arrival time (llem/serving/schedule.py,
honouring `scenario.max_concurrency`) and streamed back output by output (DELTA); llem stamps
`time.perf_counter()` as each output arrives in this process — what a client of `vllm serve` would
see, without HTTP. Engine arguments, knob checks, tokenization and the engine's process clean-up are
shared with the offline backend through their base class (`VllmEngineBackend`, llem/backends/vllm/engine.py);
only the engine class and the request path differ.

What is sent and when is the schedule (llem/serving/schedule.py): the dataset's prompts at vLLM's
arrival process, or a trace's requests (llem/serving/trace.py) with their own prompt tokens and exact
output lengths (per-request SamplingParams with max_tokens = min_tokens and ignore_eos), built in
`prepare`, outside the window. Per request the record holds each streamed output's time (one chunk per
DELTA output: vLLM's ITL) and the engine's scheduling time (`RequestOutput.metrics.scheduled_ts`, engine
core monotonic clock mapped onto perf_counter), so per-request energy counts a request as running from
its scheduling, not from its send.

Version floor: prompt rendering uses `vllm.renderers` (vLLM ≥ 0.1x, Dec 2025) where it exists and hands
token-id prompts to `generate` as they are on older releases (feature-detected in `render`).

Everything runs on one asyncio event loop owned by the backend, driven with `run_until_complete` in
load, warmup, run and close: no thread of ours runs beside the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import RunOutput, ServingInfo, Workload
from llem.backends.vllm.engine import VllmEngineBackend
from llem.backends.vllm.timing import Clocks
from llem.measure.latency import Phase, RequestRecord
from llem.serving.schedule import PlannedRequest, Schedule, arrival_schedule, drive, lateness_s


class VllmServingBackend(VllmEngineBackend):
    name = "vllm"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._warmups = 0
        self.schedule: Schedule | None = None
        self._inputs: list[Any] = []  # engine input per planned request (trace: its own prompt)
        self._req_params: list[Any] = []  # SamplingParams per planned request
        self._clocks: Clocks | None = None

    def check_engine_kwargs(self, kw: dict[str, Any]) -> list[tuple[str, Any, str]]:
        import dataclasses

        from vllm.engine.arg_utils import AsyncEngineArgs

        accepted = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        return [(f"vllm.engine_args.{k}", kw[k], "unset with scenario=serving: an argument of vllm.LLM only, "
                 "not of the async engine") for k in sorted(kw) if k not in accepted]

    # -- engine (the shared load: tokenizer, CPU env, process bookkeeping; then this engine) -------------
    def start_engine(self) -> Any:
        self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self._start())

    def after_start(self) -> None:
        # As offline: per-request stats stay on in the engine, vLLM's periodic stat logger goes (the
        # output handler holds it in `_logger_ref`; the offline load clears `logger_manager`).
        if getattr(self.engine, "_logger_ref", None):
            self.engine._logger_ref[0] = None

    def vllm_config(self) -> Any:
        return self.engine.vllm_config

    def render(self, prompts: list[dict[str, Any]]) -> list[Any]:
        """As vLLM's LLM._preprocess_cmpl: token-id prompts rendered once, before the window. Releases
        without `vllm.renderers` (before Dec 2025) take the token-id prompt dicts as they are."""
        engine = self.engine
        try:
            from vllm.renderers.inputs.preprocess import parse_model_prompt
        except ImportError:
            return prompts
        if not hasattr(engine, "renderer"):
            return prompts
        parsed = [parse_model_prompt(engine.model_config, p) for p in prompts]
        return list(engine.renderer.render_cmpl(parsed, engine.renderer.default_cmpl_tok_params))

    def sampling_params(self, max_tokens: int) -> Any:
        return self._params(max_tokens)

    async def _start(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_kwargs))

    # -- schedule (before the window) ------------------------------------------------------------------
    def prepare(self, prompts: list[str]) -> Workload:
        workload = super().prepare(prompts)
        s = self.cfg.scenario
        seed = self.cfg.seed if s.seed is None else s.seed
        if s.trace.path:
            self.schedule = self._trace_schedule(prompts, seed)
            self._inputs = list(self._engine_inputs([list(p.prompt_token_ids or ()) for p in self.schedule.requests]))
        else:
            self.schedule = arrival_schedule(len(workload.payload), s, seed, workload.input_tokens)
            self._inputs = [workload.payload[p.item] for p in self.schedule.requests]
        cache: dict[tuple[int, bool], Any] = {}
        self._req_params = []
        for p in self.schedule.requests:
            key = (p.max_tokens or self.v.max_tokens, p.ignore_eos)
            if key not in cache:
                cache[key] = self._params(*key)
            self._req_params.append(cache[key])
        return workload

    def _trace_schedule(self, prompts: list[str], seed: int) -> Schedule:
        from llem.serving.trace import trace_schedule

        context = self.vllm_config().model_config.max_model_len
        return trace_schedule(self.cfg.scenario.trace, prompts, self.tokenizer, context, seed)

    # -- requests ---------------------------------------------------------------------------------------
    def _params(self, max_tokens: int, exact: bool = False) -> Any:
        """Streamed (DELTA: every output's time, as a client sees it); exact: exactly max_tokens (trace)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        v = self.v
        min_tokens = max_tokens if exact else min(v.min_tokens or 0, max_tokens)
        return SamplingParams(
            max_tokens=max_tokens, min_tokens=min_tokens, ignore_eos=bool(exact or v.ignore_eos),
            temperature=v.temperature, top_p=v.top_p, top_k=v.top_k, detokenize=False,
            output_kind=RequestOutputKind.DELTA)

    def _sender(self, plan: Sequence[PlannedRequest], inputs: Sequence[Any], params: Sequence[Any], tag: str) -> Any:
        engine = self.engine
        mono = (self._clocks or Clocks.sample()).monotonic_to_perf_s

        async def send(i: int) -> RequestRecord:
            p = plan[i]
            item = inputs[i]
            item = dict(item) if isinstance(item, dict) else item
            chunks: list[float] = []
            tokens: list[int] = []
            finish = stats = None
            t_submit = time.perf_counter()
            if isinstance(item, dict) and "type" in item:  # rendered (vllm.renderers): stamp the arrival
                item["arrival_time"] = time.time()
            failure = error = None
            try:
                async for out in engine.generate(item, params[i], f"{tag}{i}"):
                    t = time.perf_counter()
                    o = out.outputs[0] if out.outputs else None
                    k = len(o.token_ids) if o is not None else 0
                    if k:
                        chunks.append(t)
                        tokens.append(k)
                    if o is not None and o.finish_reason is not None:
                        finish = o.finish_reason
                    stats = out.metrics
            except Exception as e:  # noqa: BLE001 - recorded per request; the run goes on
                error, failure = f"{type(e).__name__}: {e}", "server"
            sched = getattr(stats, "scheduled_ts", None) if stats is not None else None
            times = [t for t, k in zip(chunks, tokens) for _ in range(k)]  # per token: attribution only
            return RequestRecord(
                index=i, input_tokens=p.input_tokens or 0, output_tokens=sum(tokens), t_submit=t_submit,
                t_first_token=chunks[0] if chunks else None, t_end=chunks[-1] if chunks else time.perf_counter(),
                token_times=times, chunk_times=chunks, chunk_tokens=tokens,
                t_scheduled=sched + mono if sched else None, finish_reason=finish, error=error, failure=failure)

        return send

    def warmup_step(self, workload: Workload) -> float:
        """scenario.warmup_requests requests through the same scheduler and engine path: the schedule's first
        ones, at their offsets."""
        assert self.loop is not None and self.schedule is not None
        n = min(self.cfg.scenario.warmup_requests, len(self.schedule.requests))
        plan = self.schedule.requests[:n]
        cap = self.cfg.warmup.max_output_tokens
        params = self._req_params[:n] if not cap else [self._params(min(cap, p.max_tokens or cap)) for p in plan]
        send = self._sender(plan, self._inputs[:n], params, f"warmup{self._warmups}-")
        self._warmups += 1
        t0 = time.perf_counter()
        self.loop.run_until_complete(drive([p.offset_s for p in plan], send, self.cfg.scenario.max_concurrency))
        latency = time.perf_counter() - t0
        # The measured pass must not find its prompts' KV in the prefix cache because warmup ran them.
        self.loop.run_until_complete(self.engine.reset_prefix_cache())
        return latency

    def run(self, workload: Workload) -> RunOutput:
        assert self.loop is not None and self.schedule is not None
        plan = self.schedule.requests
        self._clocks = Clocks.sample()
        send = self._sender(plan, self._inputs, self._req_params, "")
        records = self.loop.run_until_complete(drive(self.schedule.offsets, send, self.cfg.scenario.max_concurrency))
        if records and all(not r.succeeded for r in records):  # nothing was served: a failed job, not a result
            raise RuntimeError(f"every one of {len(records)} requests failed; the first: {records[0].error}")
        late = lateness_s(records)
        forced = {p.index: p.max_tokens for p in plan if p.ignore_eos}
        ok = [r for r in records if r.succeeded]
        info = ServingInfo(schedule=dict(self.schedule.info), offered_rate_s=self.schedule.offered_rate_s,
                           requests=len(plan),
                           backend={"engine": "vllm.v1.engine.async_llm.AsyncLLM (in process)",
                                    "lateness_max_s": max(late) if late else None})
        if forced:
            info.output_lengths_matched = sum(1 for r in ok if r.output_tokens == forced.get(r.index))
            info.input_lengths_matched = sum(1 for r in ok if r.input_tokens == len(plan[r.index].prompt_token_ids or ()))
        phases = [Phase(t_start=r.t_scheduled if r.t_scheduled is not None else r.t_submit,
                        t_first_token=r.t_first_token, t_end=r.t_end) for r in records]
        return RunOutput(records=list(records), phases=phases, engine=self._engine_info([]), serving=info,
                         latency_method="client-side perf_counter at each streamed output of vLLM's AsyncLLM (in "
                                        "process); scheduling time from RequestOutput.metrics.scheduled_ts")

    # -- exit -------------------------------------------------------------------------------------------
    def shutdown_engine(self, engine: Any) -> None:
        engine.shutdown()
        self._close_loop()

    def close(self) -> None:
        super().close()  # shutdown_engine, then kill whatever the engine started that is still alive
        self._close_loop()  # the engine never started

    def _close_loop(self) -> None:
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
