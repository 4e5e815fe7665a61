"""Trace replay, pure parts: Azure CSV and Mooncake JSONL parsing, format detection, windows, bad files
(one line naming file, row and column, exit 2 before any model loads), and the plan (offsets, exact
lengths, shared hash_id prefixes, too-long requests skipped or clipped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llem.config.schema import ExperimentConfig, ScenarioConfig, TraceConfig, VllmConfig
from llem.config.validate import problems
from llem.serving.trace import (
    TraceError,
    detect_format,
    infer_block_tokens,
    load_trace,
    parse_azure_time,
    plan_trace,
)

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,879,7
2023-11-16 18:15:58.1234567,91,2
"""


def _mooncake(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


MOONCAKE = _mooncake([
    {"timestamp": 0, "input_length": 1100, "output_length": 10, "hash_ids": [0, 1, 2]},
    {"timestamp": 500, "input_length": 1024, "output_length": 5, "hash_ids": [0, 1]},
    {"timestamp": 1500, "input_length": 600, "output_length": 3, "hash_ids": [7, 8]},
    {"timestamp": 4000, "input_length": 30, "output_length": 1},
])


def _cfg(path: Path, **kw) -> TraceConfig:
    return TraceConfig(path=str(path), **kw)


def test_azure_timestamps_keep_all_seven_fractional_digits(tmp_path: Path) -> None:
    assert parse_azure_time("2023-11-16 18:15:50.9951690") - parse_azure_time("2023-11-16 18:15:46.6805900") \
        == pytest.approx(4.314579, abs=1e-6)
    assert parse_azure_time("12.5") == 12.5
    f = tmp_path / "azure.csv"
    f.write_text(AZURE)
    assert detect_format(f) == "azure"
    t = load_trace(_cfg(f))
    assert [r.input_len for r in t.rows] == [374, 396, 879, 91] and [r.output_len for r in t.rows] == [44, 109, 7, 2]
    assert t.rows[0].row == 2 and t.rows[-1].t_s - t.rows[0].t_s == pytest.approx(11.4428667, abs=1e-6)


def test_mooncake_windows_and_offsets_divided_by_speedup(tmp_path: Path) -> None:
    f = tmp_path / "mc.jsonl"
    f.write_text(MOONCAKE)
    assert detect_format(f) == "mooncake"
    t = load_trace(_cfg(f, start_s=0.4, duration_s=2.0))
    assert [r.row for r in t.rows] == [2, 3]  # t = 0.5 and 1.5 s
    plan = plan_trace(t, _cfg(f, speedup=2.0), list(range(100, 5000)), context_len=4096)
    assert [p.offset_s for p in plan.requests] == pytest.approx([0.0, 0.5])  # (1.5 - 0.5) / 2
    assert load_trace(_cfg(f, max_requests=2)).rows[-1].row == 2
    assert infer_block_tokens(load_trace(_cfg(f)).rows) == 512  # ceil(1100 / 3) = 367 < ceil(1024 / 2) = 512


def test_plan_has_exact_lengths_and_shared_prefix_blocks(tmp_path: Path) -> None:
    f = tmp_path / "mc.jsonl"
    f.write_text(MOONCAKE)
    t = load_trace(_cfg(f))
    pool = list(range(1000, 9000))
    plan = plan_trace(t, _cfg(f, block_tokens=512), pool, context_len=4096)
    reqs = plan.requests
    assert [len(p.prompt_token_ids) for p in reqs] == [1100, 1024, 600, 30] == [p.input_tokens for p in reqs]
    assert [p.max_tokens for p in reqs] == [10, 5, 3, 1] and all(p.ignore_eos for p in reqs)
    a, b, c, d = (p.prompt_token_ids for p in reqs)
    assert a[:1024] == b  # hash_ids [0, 1] shared: the same 1024 tokens
    assert a[1024:1100] != b[:76] and a[:512] != c[:512] and d[:30] != a[:30]  # different ids: different content
    assert plan.info["shared_blocks"] == 2 and plan.offered_rate_s == pytest.approx(3 / 4.0)


def test_too_long_requests_are_skipped_or_clipped_and_counted(tmp_path: Path) -> None:
    f = tmp_path / "mc.jsonl"
    f.write_text(MOONCAKE)
    t = load_trace(_cfg(f))
    pool = list(range(1000, 9000))
    skipped = plan_trace(t, _cfg(f), pool, context_len=1030)
    assert [p.input_tokens for p in skipped.requests] == [1024, 600, 30]
    assert skipped.info["skipped_too_long"] == 1 and skipped.info["skipped_rows"] == [1]
    assert [p.index for p in skipped.requests] == [0, 1, 2]
    clipped = plan_trace(t, _cfg(f, clip=True), pool, context_len=1030)
    assert [p.input_tokens for p in clipped.requests] == [1020, 1024, 600, 30] and clipped.info["clipped"] == 1
    assert len(clipped.requests[0].prompt_token_ids) == 1020 and clipped.requests[0].max_tokens == 10
    with pytest.raises(TraceError, match="longer than the model's context"):
        plan_trace(t, _cfg(f), pool, context_len=8)


@pytest.mark.parametrize(("name", "text", "expect"), [
    ("nocol.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n", "row 1, column GeneratedTokens: missing"),
    ("badts.csv", AZURE.replace("2023-11-16 18:15:51.0000000", "yesterday"), "row 4, column TIMESTAMP: 'yesterday'"),
    ("back.csv", AZURE.replace("18:15:58.1234567", "18:15:40.0000000"), "row 5, column TIMESTAMP: timestamps go backwards"),
    ("neg.csv", AZURE.replace(",396,", ",-3,"), "row 3, column ContextTokens: '-3' is not a token count"),
    ("frac.jsonl", _mooncake([{"timestamp": 0, "input_length": 1.5, "output_length": 1}]), "row 1, column input_length"),
    ("nots.jsonl", _mooncake([{"input_length": 1, "output_length": 1}]), "row 1, column timestamp: missing"),
    ("strts.jsonl", _mooncake([{"timestamp": "x", "input_length": 1, "output_length": 1}]), "row 1, column timestamp"),
    ("back.jsonl", _mooncake([{"timestamp": 5, "input_length": 1, "output_length": 1},
                              {"timestamp": 3, "input_length": 1, "output_length": 1}]), "row 2, column timestamp"),
    ("ids.jsonl", _mooncake([{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": "a"}]),
     "row 1, column hash_ids"),
    ("json.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{oops\n', "row 2: not JSON"),
    ("empty.csv", "", "the file is empty"),
    ("header.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests in the file"),
    ("what.txt", "hello\n", "neither a CSV header"),
])
def test_bad_traces_name_file_row_and_column(tmp_path: Path, name: str, text: str, expect: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(TraceError) as e:
        load_trace(_cfg(f))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"scenario.trace.path={f}: ") and expect in msg, msg


def test_empty_window_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(AZURE)
    with pytest.raises(TraceError, match=r"rows 2-5, column TIMESTAMP: no request in the window start_s=100"):
        load_trace(_cfg(f, start_s=100.0))
    with pytest.raises(TraceError, match="no such file"):
        load_trace(_cfg(tmp_path / "nope.csv"))


def _problems(**trace) -> list:
    cfg = ExperimentConfig(backend="vllm", vllm=VllmConfig(),
                           scenario=ScenarioConfig(name="serving", trace=TraceConfig(**trace)))
    return [p for p in problems(cfg) if p[0].startswith("scenario")]


def test_trace_knobs_and_file_are_checked_in_validation(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(AZURE)
    assert _problems(path=str(f), format="azure", speedup=4.0, duration_s=5.0, max_requests=3) == []
    for kw, key in [({"format": "sharegpt"}, "scenario.trace.format"), ({"speedup": 0.0}, "scenario.trace.speedup"),
                    ({"start_s": -1.0}, "scenario.trace.start_s"), ({"duration_s": 0.0}, "scenario.trace.duration_s"),
                    ({"max_requests": 0}, "scenario.trace.max_requests"),
                    ({"block_tokens": 0}, "scenario.trace.block_tokens")]:
        assert [p[0] for p in _problems(path=str(f), **kw)] == [key], kw
    (bad,) = _problems(path=str(tmp_path / "missing.csv"))
    assert bad[0] == "scenario.trace.path" and "no such file" in bad[2]
    f.write_text(AZURE.replace(",44", ",x"))
    (bad,) = _problems(path=str(f))
    assert "row 2, column GeneratedTokens" in bad[2]


def test_forced_format_reads_a_csv_as_mooncake_and_fails_clearly(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(AZURE)
    with pytest.raises(TraceError, match="row 1: not JSON"):
        load_trace(_cfg(f, format="mooncake"))


@pytest.mark.slow
def test_bad_trace_exits_2_with_one_line_before_any_model_loads(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    f = tmp_path / "bad.jsonl"
    f.write_text(_mooncake([{"timestamp": 0, "input_length": -5, "output_length": 1}]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    p = subprocess.run([sys.executable, "-m", "llem", "backend=vllm", "scenario=serving",
                        f"scenario.trace.path={f}", f"hydra.run.dir={tmp_path / 'out'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("llem: scenario.trace.path=") and "row 1, column input_length" in lines[0]
    assert "Traceback" not in p.stderr



@pytest.mark.slow
def test_trace_schedule_builds_prompts_from_the_dataset_text_in_the_models_tokenizer(tmp_path: Path,
                                                                                     tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from llem.serving.trace import trace_schedule

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    f = tmp_path / "mc.jsonl"
    f.write_text(MOONCAKE)
    plan = trace_schedule(_cfg(f, block_tokens=16), ["the quick brown fox jumps over the lazy dog"] * 3, tok, 1024)
    assert plan.info["prompt_source"] == "dataset text" and plan.info["skipped_too_long"] == 2  # 1100+10, 1024+5
    special = set(tok.all_special_ids)
    for p in plan.requests:
        assert len(p.prompt_token_ids) == p.input_tokens and not special & set(p.prompt_token_ids)
    synth = trace_schedule(_cfg(f), [""], tok, 1024)
    assert synth.info["prompt_source"] == "synthesized token ids"
    assert all(0 <= x < len(tok) for p in synth.requests for x in p.prompt_token_ids)
