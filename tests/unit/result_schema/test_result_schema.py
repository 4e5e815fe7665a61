"""The typed result schema (llem/result_schema/): JSON Schema generated from the types, what it refuses,
older files still loading, the docs' tables generated from the types, axes read from result fields."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import jsonschema
import pandas as pd
import pytest

from llem.result import SCHEMA_VERSION
from llem.result_schema import (
    RequestRow,
    ResultSchemaError,
    json_schema,
    result_schema,
    validate_as,
    validate_result,
)
from llem.result_schema import types as T
from llem.results import load
from llem.results.axes import batch_columns, rate_columns
from llem.results.example import example_result, write_example_job

REPO = Path(__file__).resolve().parents[3]


def _example(**kw: Any) -> dict[str, Any]:
    return example_result(overrides=["pytorch.batch_size=2"], j_per_output_token=0.1, **kw)[0]


def _problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ResultSchemaError) as e:
        validate_result(doc)
    return str(e.value)


def test_schema_command_prints_a_valid_json_schema_of_this_version() -> None:
    out = subprocess.run([sys.executable, "-m", "llem.results", "schema"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads(json.dumps(result_schema()))
    assert SCHEMA_VERSION in schema["title"] and SCHEMA_VERSION == "1.2.0"
    assert schema["additionalProperties"] is False and "identity" in schema["required"]
    assert schema["$defs"]["LatencyStats"]["required"] == ["n"]
    for doc in ("requests", "timeseries", "manifest", "plan"):
        out = subprocess.run([sys.executable, "-m", "llem.results", "schema", doc], capture_output=True, text=True,
                             check=True, cwd=REPO).stdout
        jsonschema.Draft202012Validator.check_schema(json.loads(out))
    bad = subprocess.run([sys.executable, "-m", "llem.results", "schema", "results"], capture_output=True,
                         text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("llem: usage") and not bad.stdout


def test_example_and_failed_results_are_valid() -> None:
    validate_result(_example())
    validate_result(example_result(overrides=[], status="failed")[0])


@pytest.mark.parametrize("path, value, needle", [
    (("throughput", "output_tok_s"), "fast", "throughput.output_tok_s"),  # wrong type in a typed field
    (("latency", "ttft_s", "p50"), "1 ms", "latency.ttft_s.p50"),
    (("workload", "prompts"), 8.5, "workload.prompts"),  # float where an integer is
    (("energy", "measured"), "yes", "energy.measured"),
    (("status",), "done", "status"),  # not one of the statuses
    (("energy", "basis"), "gpus", "energy.basis"),
])
def test_a_wrong_type_in_a_typed_field_is_refused(path: tuple[str, ...], value: Any, needle: str) -> None:
    doc = _example()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert needle in _problems(doc)


@pytest.mark.parametrize("section, key", [("workload", "prompts"), ("throughput", "output_tok_s"),
                                          ("energy", "measured"), ("flops", "method"), (None, "status"),
                                          (None, "identity"), ("latency", None)])
def test_a_missing_required_field_is_refused(section: str | None, key: str | None) -> None:
    doc = _example()
    if section is None:
        del doc[key]
    elif key is None:
        del doc[section]
    else:
        del doc[section][key]
    _problems(doc)


def test_unknown_keys_refused_in_closed_blocks_allowed_in_open_ones() -> None:
    for where in (None, "workload", "throughput", "energy", "flops", "identity"):
        doc = _example()
        (doc if where is None else doc[where])["throughput_tok_s"] = 1.0  # a typo of a real key
        assert "throughput_tok_s" in _problems(doc)
    doc = _example()
    doc["model"]["kv_cache_bytes"] = 1  # open: backends add facts
    doc["environment"]["numa_nodes"] = 2
    doc["energy"]["devices"][0]["power_source"] = "instant"
    validate_result(doc)


def test_the_serving_block_of_a_real_timeline_is_valid_and_checked(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from llem.backends.base import ServingInfo
    from llem.measure.latency import RequestRecord
    from llem.serving.metrics import serving_block

    def rec(i: int, submit: float, first: float, end: float, **kw: Any) -> RequestRecord:
        return RequestRecord(i, 8, 4, submit, first, end, None, token_times=[first, end], t_due=submit,
                             chunk_times=[first, end], chunk_tokens=[1, 3], **kw)

    scen = SimpleNamespace(request_rate=float("inf"), burstiness=1.0, max_concurrency=None, warmup_requests=0,
                           slo=SimpleNamespace(ttft_s=0.5, tpot_s=0.2, e2el_s=None))
    recs = [rec(0, 0.0, 0.4, 1.0), rec(1, 0.1, 0.5, 1.2), rec(2, 0.2, 0.9, 1.9, error="x", failure="server")]
    block, rows = serving_block(recs, 0.0, 2.0, scen, readings=[], energy={"basis": "gpu", "gpu_j": 40.0},
                                info=ServingInfo({}, offered_rate_s=2.0, requests=3))
    validate_as(json.loads(json.dumps(block)), T.Serving)
    assert block["request_rate"] is None and block["request_rate_inf"] is True
    for r in recs:
        validate_as({**r.as_row(), **rows[r.index].as_dict()}, RequestRow)
    bad = json.loads(json.dumps(block))
    bad["requests"]["failed_by_reason"] = {"server": "one"}
    with pytest.raises(ResultSchemaError, match="failed_by_reason"):
        validate_as(bad, T.Serving)


def test_a_result_of_schema_1_1_and_1_0_still_loads(tmp_path: Path) -> None:
    for i, version in enumerate(("1.1.0", "1.0.0", "2.0.0")):
        write_example_job(tmp_path / str(i), overrides=[f"pytorch.batch_size={i + 1}"], batch_size=i + 1,
                          job_index=i, config_hash=f"{i:016x}", j_per_output_token=0.5)
        path = tmp_path / str(i) / "result.json"
        doc = json.loads(path.read_text())
        doc["schema_version"] = version
        for key in ("gpu_settings", "objective"):  # 1.1 files predate these blocks
            doc.pop(key)
        doc["energy"].pop("basis")
        doc["energy"].pop("node_j")
        path.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        df = load(tmp_path)
    assert sorted(df["schema_version"]) == ["1.0.0", "1.1.0"]  # the 2.x file is skipped, with a warning
    assert any("2.0.0" in str(w.message) for w in seen)
    assert df["throughput.output_tok_s"].notna().all() and (df["energy.j_per_output_token"] == 0.5).all()


def test_docs_tables_are_the_generated_ones() -> None:
    from llem.results.__main__ import schema_markdown

    page = (REPO / "docs" / "results-schema.md").read_text()
    start = page.index("<!-- generated: python -m llem.results schema --markdown -->\n")
    end = page.index("<!-- end generated -->")
    assert page[start:end].split("\n", 1)[1].strip() == schema_markdown().strip(), \
        "docs/results-schema.md is stale: paste `python -m llem.results schema --markdown` between the markers"
    for cls in ("ResultDoc", "Energy", "Serving", "LatencyStats", "RequestRow", "ManifestDoc"):
        assert f"### {cls}\n" in page


@dataclass
class Inner:
    OPEN: ClassVar[bool] = True
    a: int


@dataclass
class Outer:
    x: float | None
    kind: Literal["a", "b"]
    inner: Inner
    rows: list[Inner] = field(default_factory=list)
    m: dict[str, int] = field(default_factory=dict)


def test_generator_rules() -> None:
    s = json_schema(Outer)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["required"] == ["x", "kind", "inner"] and s["additionalProperties"] is False
    assert s["properties"]["x"] == {"type": ["number", "null"]} and s["properties"]["kind"] == {"enum": ["a", "b"]}
    assert s["$defs"]["Inner"]["additionalProperties"] is True
    v = jsonschema.Draft202012Validator(s)
    assert v.is_valid({"x": 1, "kind": "a", "inner": {"a": 1, "z": 0}, "m": {"k": 2}})
    assert not v.is_valid({"x": 1, "kind": "a", "inner": {"a": 1.5}})
    assert not v.is_valid({"x": True, "kind": "a", "inner": {"a": 1}})  # a bool is no number here


def test_axes_are_found_from_result_fields_not_override_names() -> None:
    jobs = pd.DataFrame({
        "override.pytorch.batch_size": [1, 2, 4, None, None],
        "override.vllm.max_num_seqs": [None, None, None, 8, 32],
        "override.mybackend.cap": [None, None, None, None, None],
        "override.precision": ["fp32", "fp16", "fp32", "fp16", "fp32"],
        "override.n": [1, 2, 4, 8, 16],  # equals the batch size in 3 jobs only
        "workload.batch_size": [1, 2, 4, 8, 32],
    })
    cols = [c for c in jobs.columns if c.startswith("override.")]
    assert batch_columns(jobs, cols) == ["override.pytorch.batch_size", "override.vllm.max_num_seqs"]
    serving = pd.DataFrame({"override.scenario.request_rate": [1.0, 2.0, float("inf")],
                            "override.x.rps": [1, 2, 3],
                            "override.x.same_until_inf": [1.0, 2.0, 5.0],  # inf is a rate too
                            "serving.request_rate": [1.0, 2.0, None],
                            "serving.request_rate_inf": [False, False, True]})
    cols = ["override.scenario.request_rate", "override.x.rps", "override.x.same_until_inf"]
    assert rate_columns(serving, cols) == ["override.scenario.request_rate"]
    renamed = serving.rename(columns={"override.scenario.request_rate": "override.scenario.rate"})
    assert rate_columns(renamed, ["override.scenario.rate"]) == ["override.scenario.rate"]


def test_every_result_a_test_writes_is_checked(tmp_path: Path) -> None:
    """conftest's autouse check finds llem-written results under tmp_path and skips hand-made ones."""
    from conftest import _written_results

    write_example_job(tmp_path / "a", overrides=[])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text(json.dumps({"status": "failed"}))  # hand-made: not llem's
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "result.json").write_text('{"status": "runn')  # torn
    assert _written_results(tmp_path) == [tmp_path / "a" / "result.json"]
    broken = copy.deepcopy(json.loads((tmp_path / "a" / "result.json").read_text()))
    broken["timing"]["window_s"] = "2 s"
    with pytest.raises(ResultSchemaError):
        validate_result(broken)


def test_typed_objects_round_trip_the_json_exactly() -> None:
    from llem.result_schema.convert import extra_keys, parse, to_json

    doc = _example()
    doc["model"]["kv_cache_bytes"] = 7  # an open block's own key survives
    typed = parse(doc, T.ResultDoc)
    assert isinstance(typed.workload, T.Workload) and isinstance(typed.latency.ttft_s, T.LatencyStats)
    assert isinstance(typed.energy.devices[0], T.DeviceReading) and isinstance(typed.serving, T.Empty)
    assert typed.throughput.output_tok_s == 500.0 and extra_keys(typed.model) == {"kv_cache_bytes": 7}
    assert json.dumps(to_json(typed)) == json.dumps(doc)  # same keys, same order, same values
    failed = example_result(overrides=[], status="failed")[0]
    assert to_json(parse(failed, T.ResultDoc)) == failed
    bad = _example()
    bad["workload"]["prompt"] = 1
    with pytest.raises(ValueError, match="prompt"):
        parse(bad["workload"], T.Workload)
    with pytest.raises(ValueError, match="missing required key.*prompts"):
        parse({"batch_size": 1}, T.Workload)
    from llem.result import Result

    r = Result(llem_version="x", identity={"config_hash": "abc", "cycle": 0})
    assert r.typed().identity.config_hash == "abc" and to_json(r.typed()) == r.as_dict()


def test_study_files_match_their_types(tmp_path: Path) -> None:
    """manifest.json, requests.jsonl rows and timeseries.parquet rows of a study (the example study is
    written by the real manifest and request code); a timeseries row missing its device is refused."""
    from llem.results import load_requests, load_timeseries
    from llem.results.example import write_example_study

    write_example_study(tmp_path, cycles=1)
    validate_as(json.loads((tmp_path / "manifest.json").read_text()), T.ManifestDoc)
    for row in load_requests(tmp_path / "0").to_dict(orient="records"):
        validate_as(row, RequestRow)
    rows = load_timeseries(tmp_path / "0").to_dict(orient="records")
    for row in rows:
        validate_as(row, T.TimeseriesRow)
    del rows[0]["device"]
    with pytest.raises(ResultSchemaError, match="device"):
        validate_as(rows[0], T.TimeseriesRow)


def test_report_groups_and_serving_series_leave_out_the_axes_the_fields_carry(tmp_path: Path) -> None:
    """The report's lines are not the batch sizes (workload.batch_size), the serving series are not the
    rates (serving.request_rate), whatever the overrides that set them are called."""
    from llem.report.build import _group_keys
    from llem.results.example import write_example_study
    from llem.results.study_summary import serving_frame

    write_example_study(tmp_path / "study", cycles=1, timeseries=False, skipped=False, failed=False)
    jobs = load(tmp_path / "study")
    assert _group_keys(jobs) == ["backend"]  # not pytorch.batch_size / vllm.max_num_seqs
    for i, (rate, precision) in enumerate([(5.0, "fp32"), (10.0, "fp32"), (5.0, "fp16"), (10.0, "fp16")]):
        d = tmp_path / "serving" / str(i)
        write_example_job(d, overrides=[f"scenario.rate_knob={rate:g}", f"precision={precision}"], job_index=i,
                          config_hash=f"{i + 1:016x}", precision=precision)
        res = json.loads((d / "result.json").read_text())
        res["serving"] = {"request_rate": rate, "request_rate_inf": False, "achieved_rate_s": rate * 0.9}
        res["workload"]["scenario"] = "serving"
        (d / "result.json").write_text(json.dumps(res))
    frame = serving_frame(load(tmp_path / "serving"))
    assert sorted(frame["series"]) == ["precision=fp16"] * 2 + ["precision=fp32"] * 2
    assert sorted(frame["serving.request_rate"]) == [5.0, 5.0, 10.0, 10.0]
