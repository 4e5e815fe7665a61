"""backend=openai replays a trace: each request at its trace time with exactly its input length (sent as
token ids to /v1/completions) and its output length (max_tokens + ignore_eos, to any server), through
the fake OpenAI server in this process. The trace parsing and planning are llem.serving.trace's (tested
with the in-process vLLM backend); this checks what the HTTP backend sends and records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fake_openai import Behaviour, FakeServer  # noqa: E402


def test_a_mooncake_trace_is_sent_with_exact_lengths_at_its_times(tmp_path: Path, tiny_model: Path,
                                                                  llem_cache: Path) -> None:
    from llem.backends.openai.backend import OpenaiBackend
    from llem.config.schema import (
        EnergyConfig,
        ExperimentConfig,
        ModelConfig,
        OpenaiConfig,
        ScenarioConfig,
        TraceConfig,
    )

    rows = [(0, 20, 3, [1, 2]), (100, 33, 5, [1, 3, 4]), (250, 7, 2, [9])]  # ms, input, output, hash_ids
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": t, "input_length": i, "output_length": o, "hash_ids": h}) + "\n"
                             for t, i, o, h in rows))
    with FakeServer(Behaviour(model="llem/tiny-gpt2")) as srv:
        cfg = ExperimentConfig(backend="openai", pytorch=None, model=ModelConfig(cache_dir=str(llem_cache)),
                               energy=EnergyConfig(meter="none"),
                               openai=dataclasses.replace(OpenaiConfig(), base_url=srv.base_url, max_tokens=8),
                               scenario=ScenarioConfig(name="serving", warmup_requests=1,
                                                       trace=TraceConfig(path=str(trace), speedup=2.0,
                                                                         block_tokens=16)))
        backend = OpenaiBackend(cfg)
        try:
            backend.load()
            assert backend.settings is not None and not backend.settings.ignore_eos  # a fake server: not by default
            workload = backend.prepare(["energy token model power latency river stone cloud"] * 4)
            assert backend.schedule.offsets == [0.0, 0.05, 0.125]  # trace ms / 1000 / speedup 2
            out = backend.run(workload)
        finally:
            backend.close()
        stats = srv.stats
    recs = out.records
    assert [r.input_tokens for r in recs] == [20, 33, 7]  # the server counted the token ids it got
    assert [r.output_tokens for r in recs] == [3, 5, 2] and all(r.succeeded for r in recs)
    assert stats.fields["ignore_eos"] == 3 and "min_tokens" not in stats.fields  # asked by the trace
    sched = out.serving.schedule_block()
    assert sched["source"] == "trace" and sched["output_lengths_matched"] == 3 and sched["input_lengths_matched"] == 3
    late = [r.t_submit - r.t_due for r in recs]
    assert all(x >= 0 for x in late)
    assert recs[1].t_due - recs[0].t_due == pytest.approx(0.05)
