"""llem.results on generated result trees: loading, aggregation, summaries, comparison, progress.

Result files come from llem.results.example, which builds every block with the code a real job
uses (Result, latency_block, energy_block, flops_block), so the schema is the real one.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

import llem.results as results
from llem.launch.progress import eta_s, format_duration, progress_line
from llem.results.aggregate import aggregate, metric_stats, pareto_front
from llem.results.compare import compare, log_ratio_ci, match_configs, render_compare
from llem.results.example import example_result, write_example_job, write_example_study
from llem.results.study_summary import fmt_ci, write_sweep_summary
from llem.study import manifest as manifest_mod


def _job(folder: Path, **kw: object) -> dict:
    return write_example_job(folder, **kw)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 configs (5 pytorch, 3 vLLM) × 3 cycles, one failed job, one skipped config, energy measured."""
    root = tmp_path_factory.mktemp("study")
    write_example_study(root, cycles=3)
    return root


def test_load_one_row_per_job_with_unit_named_columns(study: Path) -> None:
    df = results.load(study)
    assert len(df) == 24 and df["job_dir"].is_unique
    for col in ("throughput.output_tok_s", "energy.j_per_output_token", "latency.ttft_s.p50",
                "latency.itl_request_mean_s.p50", "timing.window_s", "config_hash", "cycle",
                "study_design_hash", "job_dir", "status", "error.type", "error.message",
                "override.pytorch.batch_size", "override.vllm.max_num_seqs", "override.backend"):
        assert col in df.columns, col
    # integers stay integers even though vLLM jobs have no pytorch.batch_size
    assert str(df["override.pytorch.batch_size"].dtype) == "Int64"
    assert sorted(df["override.pytorch.batch_size"].dropna().unique()) == [1, 2, 4, 8, 16]
    assert df["override.vllm.max_num_seqs"].notna().sum() == 9
    # the values are the ones in the files
    first = json.loads((study / "0" / "result.json").read_text())
    row = df[df["job_dir"] == str(study / "0")].iloc[0]
    assert row["throughput.output_tok_s"] == first["throughput"]["output_tok_s"]
    assert row["latency.ttft_s.p50"] == first["latency"]["ttft_s"]["p50"]
    assert row["energy.device.gpu:0.energy_j"] == first["energy"]["devices"][0]["energy_j"]
    # job folders in the order people count them (2 before 10), the sweep folder recognised
    assert [Path(d).name for d in df["job_dir"]] == [str(i) for i in range(24)]
    assert set(df["sweep_dir"]) == {str(study)}
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["error.type"] == "OutOfMemoryError"
    assert failed.iloc[0]["error.reason"] == "crash" and math.isnan(failed.iloc[0]["throughput.output_tok_s"])


def test_load_hydra_layouts_single_run_file_and_tree(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "2026-11-23" / "01-11-13"
    _job(run, overrides=["n=4"])
    for i in range(12):
        _job(tmp_path / "multirun" / "2026-11-23" / "02-00-00" / str(i), overrides=[f"pytorch.batch_size={i + 1}"],
             batch_size=i + 1)
    (tmp_path / "multirun" / "2026-11-23" / "02-00-00" / "multirun.yaml").write_text("hydra: {}\n")
    assert len(results.load(run)) == 1
    assert len(results.load(run / "result.json")) == 1
    tree = results.load(tmp_path)
    assert len(tree) == 13
    assert tree["sweep_dir"].isna().sum() == 1  # the single run belongs to no sweep
    sweep_rows = tree[tree["sweep_dir"].notna()]
    assert list(sweep_rows["override.pytorch.batch_size"]) == list(range(1, 13))


def test_bad_files_are_reported_not_fatal(tmp_path: Path) -> None:
    _job(tmp_path / "good", overrides=["n=4"])
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "result.json").write_text('{"status": "compl')
    future, _ = example_result(overrides=[], config_hash="f" * 16)
    future["schema_version"] = "2.0.0"
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "result.json").write_text(json.dumps(future))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = results.load(tmp_path)
    assert sorted(df["status"]) == ["completed", "failed"]
    bad = df[df["status"] == "failed"].iloc[0]
    assert bad["error.type"] == "CorruptResult" and "corrupt" in bad["error.message"]
    assert any("schema 2.0.0" in str(w.message) for w in caught)


def test_missing_folder_names_the_path_and_empty_folder_gives_empty_frame(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        results.load(tmp_path / "nope")
    empty = results.load(tmp_path)
    assert empty.empty and {"job_dir", "status", "config_hash"} <= set(empty.columns)


def test_metric_stats_on_known_numbers() -> None:
    s = metric_stats([100.0, 102.0, 104.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(102.0) and s["std"] == pytest.approx(2.0)
    assert s["cv"] == pytest.approx(2.0 / 102.0)
    assert s["ci95"] == pytest.approx(4.303 * 2.0 / math.sqrt(3))  # t(0.975, 2) = 4.303
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((102 - s["ci95"], 102 + s["ci95"]))
    one = metric_stats([5.0, float("nan")])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["ci95"])


def test_aggregate_by_config_with_ci_and_unstable_flag(tmp_path: Path) -> None:
    tok = {"stable": [100.0, 102.0, 104.0], "noisy": [100.0, 130.0, 70.0]}
    for name, values in tok.items():
        for cycle, v in enumerate(values):
            _job(tmp_path / f"{name}{cycle}", overrides=[f"+tag={name}"], config_hash=name.ljust(16, "0"),
                 cycle=cycle, output_tok_s=v, j_per_output_token=0.5)
    agg = aggregate(results.load(tmp_path)).set_index("override.tag")
    assert agg.loc["stable", "throughput.output_tok_s.mean"] == pytest.approx(102.0)
    assert agg.loc["stable", "throughput.output_tok_s.ci95"] == pytest.approx(4.303 * 2 / math.sqrt(3))
    assert agg.loc["stable", "throughput.output_tok_s.n"] == 3 and agg.loc["stable", "n_completed"] == 3
    assert not agg.loc["stable", "unstable"]
    assert agg.loc["noisy", "unstable"] and agg.loc["noisy", "unstable_metrics"] == "throughput.output_tok_s"
    assert agg.loc["noisy", "throughput.output_tok_s.cv"] == pytest.approx(30.0 / 100.0)
    # a looser threshold clears it; J/token is identical across cycles: CV 0
    loose = aggregate(results.load(tmp_path), cv_threshold=0.5).set_index("override.tag")
    assert not loose.loc["noisy", "unstable"]
    assert loose.loc["noisy", "energy.j_per_output_token.cv"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="cv_threshold=0"):
        aggregate(results.load(tmp_path), cv_threshold=0)


def test_pareto_front_membership() -> None:
    #        tok/s  J/token
    pts = [(100, 1.0),   # dominated: (300, 0.5) beats it on both
           (300, 0.5),   # front
           (500, 0.6),   # front: more throughput, a little more energy
           (400, 0.7),   # dominated by (500, 0.6)
           (500, 0.6),   # tie with a front point: still on it
           (50, 0.4),    # front: least energy
           (float("nan"), 0.1)]
    assert pareto_front([p[0] for p in pts], [p[1] for p in pts]) == [False, True, True, False, True, True, False]
    # latency: less is better on y as well; maximise y instead flips membership
    assert pareto_front([1, 2], [1, 2], minimize_y=False) == [False, True]


def test_sweep_summary_files_and_table(study: Path) -> None:
    text = write_sweep_summary(study)
    csv = pd.read_csv(study / "summary.csv")
    parquet = pd.read_parquet(study / "summary.parquet")
    assert len(csv) == len(parquet) == 9  # 8 configs + 1 skipped
    assert csv["skipped_reason"].notna().sum() == 1
    b4 = csv[csv["config"] == "pytorch.batch_size=4"].iloc[0]
    assert (b4["n_jobs"], b4["n_completed"], b4["n_failed"]) == (3, 2, 1)
    lines = text.splitlines()
    assert "8 config(s), 24 job(s): 23 completed, 1 failed/interrupted, 3 skipped" in lines[0]
    assert any(line.strip().startswith("backend=vllm vllm.max_num_seqs=128") for line in lines)
    row = next(line for line in lines if line.strip().startswith("pytorch.batch_size=8 "))
    agg = csv.set_index("config").loc["pytorch.batch_size=8"]
    assert fmt_ci(agg["throughput.output_tok_s.mean"], agg["throughput.output_tok_s.ci95"]) in row
    assert "UNSTABLE" in next(line for line in lines if line.strip().startswith("pytorch.batch_size=16 "))
    assert any("OutOfMemoryError: CUDA out of memory" in line and "[crash]" in line for line in lines)
    assert any("pytorch.batch_size=0" in line and "reason: pytorch.batch_size=0 is invalid" in line for line in lines)


def test_summary_without_energy_says_why(tmp_path: Path) -> None:
    write_example_study(tmp_path, cycles=2, energy=False, failed=False, skipped=False)
    text = write_sweep_summary(tmp_path)
    assert "energy not measured: energy measurement disabled" in text
    assert "failed (" not in text and "skipped (" not in text


def test_summary_lists_manifest_jobs_that_never_ran(tmp_path: Path) -> None:
    _job(tmp_path / "0", overrides=["n=4"], config_hash="a" * 16, cycle=0)
    manifest_mod.write(tmp_path, manifest_mod.new("d" * 16, [
        {"index": 0, "cycle": 0, "config_hash": "a" * 16, "overrides": ["n=4"], "status": "completed"},
        {"index": 1, "cycle": 1, "config_hash": "a" * 16, "overrides": ["n=4"], "status": "interrupted"}]))
    text = write_sweep_summary(tmp_path)
    assert "not run (1): job 1 (interrupted)" in text
    assert text.splitlines()[0].endswith("1 job(s): 1 completed, 0 failed/interrupted, 1 not run")


def test_log_ratio_ci_on_known_numbers() -> None:
    r = log_ratio_ci([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])
    # logs differ by ln 2 exactly; each side's log sd is ln 2, so se = ln2·√(2/3) and Welch df = 4
    se = math.log(2) * math.sqrt(2 / 3)
    assert r["ratio"] == pytest.approx(2.0) and r["df"] == pytest.approx(4.0)
    assert r["ci95_low"] == pytest.approx(2 * math.exp(-2.776 * se))
    assert r["ci95_high"] == pytest.approx(2 * math.exp(2.776 * se))
    single = log_ratio_ci([10.0], [15.0])
    assert single["ratio"] == pytest.approx(1.5) and math.isnan(single["ci95_low"])


def test_compare_matches_by_hash_then_by_swept_overrides(tmp_path: Path) -> None:
    write_example_study(tmp_path / "a", cycles=3, failed=False, skipped=False)
    write_example_study(tmp_path / "b", cycles=3, speed=1.5, precision="fp16", failed=False, skipped=False)
    ja, jb = results.load(tmp_path / "a"), results.load(tmp_path / "b")
    assert not set(ja["config_hash"]) & set(jb["config_hash"])  # fp16 changes every hash
    table, matching = compare(ja, jb)
    assert len(matching.pairs) == 8 and not matching.unmatched_a and not matching.unmatched_b
    assert {"backend", "override.pytorch.batch_size", "override.vllm.max_num_seqs"} == set(matching.key_columns)
    tok = table[table["metric"] == "throughput.output_tok_s"].set_index("config")
    assert len(tok) == 8
    assert tok.loc["pytorch.batch_size=8", "ratio"] == pytest.approx(1.5, rel=0.08)
    assert (tok["ci95_low"] < tok["ratio"]).all() and (tok["ratio"] < tok["ci95_high"]).all()
    jpt = table[table["metric"] == "energy.j_per_output_token"]
    assert (jpt["ratio"] < 1).all()
    text = render_compare(table, matching, "a", "b")
    assert "pytorch.batch_size=8" in text and "matched by overrides on: backend" in text
    # the same study against itself: matched by hash, ratios exactly 1
    same, m2 = compare(ja, ja)
    assert {how for _, _, how in m2.pairs} == {"config_hash"}
    assert same["ratio"].tolist() == pytest.approx([1.0] * len(same))


def test_match_leaves_ambiguous_configs_unmatched(tmp_path: Path) -> None:
    for i, (name, b) in enumerate([("a", 1), ("a", 1), ("b", 1)]):
        _job(tmp_path / name / str(i), overrides=[f"pytorch.batch_size={b}", f"seed={i}"], config_hash=f"{i:016x}")
    m = match_configs(results.load(tmp_path / "a"), results.load(tmp_path / "b"))
    assert m.pairs == [] and len(m.unmatched_a) == 2 and len(m.unmatched_b) == 1


def test_progress_eta_and_line() -> None:
    assert eta_s(0, 10, 0.0) is None and eta_s(0, 10, 0.0, prior_job_s=30) == 300
    assert eta_s(5, 10, 100.0) == pytest.approx(100.0)
    # median job 10 s (a 60 s first job does not drag it), 2 s of gaps per job
    assert eta_s(5, 10, 60 + 10 * 4 + 10, durations_s=[60, 10, 10, 10, 10]) == pytest.approx(5 * (10 + 2))
    assert eta_s(10, 10, 5.0) == 0.0
    with pytest.raises(ValueError, match="done=11, total=10"):
        eta_s(11, 10, 1.0)
    assert [format_duration(s) for s in (45, 190, 3720, None)] == ["45s", "3m10s", "1h02m", "?"]
    line = progress_line(5, 10, 1, 190.0, current="backend=vllm vllm.max_num_seqs=64", current_index=6)
    assert line == "[#####-----] 5/10 jobs · 1 failed · job 6: backend=vllm vllm.max_num_seqs=64 · ETA 3m10s"
    long = progress_line(0, 3, 0, 0.0, current="x=" + "y" * 100, current_index=1)
    assert "..." in long and long.endswith("ETA ?") and len(long) < 120
    assert progress_line(3, 3, 0, 65.0).endswith("done in 1m05s")
