"""vLLM serving scenario: the in-process async engine (`vllm.v1.engine.async_llm.AsyncLLM`, the engine
behind `vllm serve`) fed by llem's arrival process (`scenario=serving`).

Each request is handed to `AsyncLLM.generate` at its scheduled arrival time (llem/serving/schedule.py,
honouring `scenario.max_concurrency`) and streamed back output by output (DELTA); llem stamps
`time.perf_counter()` as each output arrives in this process — what a client of `vllm serve` would
see, without HTTP. Engine arguments, knob checks, tokenization and the engine's process clean-up are
the offline backend's (llem/backends/vllm.py); only the engine class and the request path differ.

Everything runs on one asyncio event loop owned by the backend, driven with `run_until_complete` in
load, warmup, run and close: no thread of ours runs beside the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import RunOutput, Workload
from llem.backends.vllm import VllmBackend
from llem.config.validate import ConfigError
from llem.measure.latency import Phase, RequestRecord
from llem.serving.arrivals import arrival_offsets
from llem.serving.schedule import drive, lateness_s


class _EngineView:
    """What the offline backend reads from `vllm.LLM`, served by an AsyncLLM (config, prompt rendering)."""

    def __init__(self, engine: Any) -> None:
        self.llm_engine = engine  # .model_config, .vllm_config

    def _preprocess_cmpl(self, prompts: Sequence[Any]) -> Sequence[Any]:
        """As vLLM's LLM._preprocess_cmpl: token-id prompts rendered once, before the window."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        engine = self.llm_engine
        parsed = [parse_model_prompt(engine.model_config, p) for p in prompts]
        return engine.renderer.render_cmpl(parsed, engine.renderer.default_cmpl_tok_params)


class VllmServingBackend(VllmBackend):
    name = "vllm"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.engine: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._warmups = 0

    def _engine_kwargs(self) -> dict[str, Any]:
        kw = super()._engine_kwargs()
        import dataclasses

        from vllm.engine.arg_utils import AsyncEngineArgs

        accepted = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        offline_only = sorted(k for k in kw if k not in accepted)
        if offline_only:
            raise ConfigError([(f"vllm.engine_args.{k}", kw[k], "unset with scenario=serving: an argument of "
                                "vllm.LLM only, not of the async engine") for k in offline_only])
        return kw

    # -- load (the offline backend's load: tokenizer, CPU env, process bookkeeping; this engine) ---------
    def _make_engine(self) -> Any:
        self.loop = asyncio.new_event_loop()
        self.engine = self.loop.run_until_complete(self._start())
        # As offline: per-request stats stay on in the engine, vLLM's periodic stat logger goes (the
        # output handler holds it in `_logger_ref`; the offline load clears `logger_manager`).
        if getattr(self.engine, "_logger_ref", None):
            self.engine._logger_ref[0] = None
        return _EngineView(self.engine)

    async def _start(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_kwargs))

    # -- requests ---------------------------------------------------------------------------------------
    def _params(self, max_tokens: int) -> Any:
        from vllm.sampling_params import RequestOutputKind

        params = super()._params(max_tokens)
        params.output_kind = RequestOutputKind.DELTA  # always streamed: every output's time, as a client sees it
        return params

    def _sender(self, workload: Workload, params: Any, tag: str) -> Any:
        engine, payload = self.engine, workload.payload

        async def send(i: int) -> RequestRecord:
            item = dict(payload[i % len(payload)])
            times: list[float] = []
            t_submit = time.perf_counter()
            item["arrival_time"] = time.time()
            try:
                async for out in engine.generate(item, params, f"{tag}{i}"):
                    t = time.perf_counter()
                    k = len(out.outputs[0].token_ids) if out.outputs else 0
                    times.extend([t] * k)
                error = None
            except Exception as e:  # noqa: BLE001 - recorded per request; the run goes on
                error = f"{type(e).__name__}: {e}"
            return RequestRecord(index=i, input_tokens=workload.input_tokens[i % len(payload)],
                                 output_tokens=len(times), t_submit=t_submit,
                                 t_first_token=times[0] if times else None,
                                 t_end=times[-1] if times else time.perf_counter(), token_times=times, error=error)

        return send

    def _offsets(self, n: int) -> list[float]:
        s = self.cfg.scenario
        return arrival_offsets(n, s.request_rate, s.burstiness, self.cfg.seed if s.seed is None else s.seed)

    def warmup_step(self, workload: Workload) -> float:
        """scenario.warmup_requests requests through the same scheduler and engine path, at the same rate."""
        assert self.loop is not None
        n = self.cfg.scenario.warmup_requests
        max_tokens = self.cfg.warmup.max_output_tokens or self.v.max_tokens
        send = self._sender(workload, self._params(max_tokens), f"warmup{self._warmups}-")
        self._warmups += 1
        t0 = time.perf_counter()
        self.loop.run_until_complete(drive(self._offsets(n), send, self.cfg.scenario.max_concurrency))
        latency = time.perf_counter() - t0
        # The measured pass must not find its prompts' KV in the prefix cache because warmup ran them.
        self.loop.run_until_complete(self.engine.reset_prefix_cache())
        return latency

    def run(self, workload: Workload) -> RunOutput:
        assert self.loop is not None
        offsets = self._offsets(len(workload.payload))  # pure and cheap; the window starts with the arrivals
        send = self._sender(workload, self._params(self.v.max_tokens), "")
        records = self.loop.run_until_complete(drive(offsets, send, self.cfg.scenario.max_concurrency))
        if records and all(r.error is not None for r in records):  # nothing was served: a failed job, not a result
            raise RuntimeError(f"every one of {len(records)} requests failed; the first: {records[0].error}")
        late = lateness_s(records)
        extra: dict[str, Any] = {
            "latency_method": "client-side perf_counter at each streamed output of vLLM's AsyncLLM (in process)",
            "engine": self._engine_info([]),
            "serving_info": {"engine": "vllm.v1.engine.async_llm.AsyncLLM (in process)",
                             "lateness_max_s": max(late) if late else None},
        }
        phases = [Phase(t_start=r.t_submit, t_first_token=r.t_first_token, t_end=r.t_end) for r in records]
        return RunOutput(records=records, phases=phases, extra=extra)

    # -- exit -------------------------------------------------------------------------------------------
    def close(self) -> None:
        engine, self.engine, self.llm = self.engine, None, None
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.shutdown()
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
        super().close()  # kills whatever the engine started that is still alive
