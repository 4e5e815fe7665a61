"""Search, tracking and the Python API (issue 24): study.objective, Optuna's sweeper with llem's
launcher, tracking=mlflow, the Pareto section of the report, llem.run / llem.run_study.

Optuna and MLflow run for real (test extras); the slow tests use the tiny model, n=2, 4 output tokens."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_llem
from omegaconf import OmegaConf

from llem.config.schema import ExperimentConfig, StudyConfig
from llem.config.validate import ConfigError, problems
from llem.search import objective as obj
from llem.search.launching import SUPPORT, SearchRun, check_directions, support_line
from llem.search.tracking import REDACTED, job_metrics, job_params, scrub, secrets_of

FAST = ["n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true", "study.gaps=false"]


# -- study.objective: parsing, validation, values --------------------------------------------------------
def test_objective_parses_fields_and_directions() -> None:
    assert obj.parse("throughput.output_tok_s:max") == [obj.Objective("throughput.output_tok_s", "maximize")]
    two = obj.parse(["energy.j_per_output_token:min", "latency.ttft_s.p90:min"])
    assert [(o.field, o.direction) for o in two] == [("energy.j_per_output_token", "minimize"),
                                                     ("latency.ttft_s.p90", "minimize")]
    assert obj.parse("[latency.e2e_s.p50:min,throughput.output_tok_s:max]")[1].direction == "maximize"
    assert obj.parse(None) == []
    for field in ("serving.slo.goodput_rate_s", "serving.energy.j_per_request", "energy.j_per_request",
                  "latency.itl_request_mean_s.p50"):
        assert field in obj.numeric_fields()
    assert "energy.reason" not in obj.numeric_fields() and "energy.measured" not in obj.numeric_fields()


@pytest.mark.parametrize("spec, says", [
    ("throughput.output_tok_s", "a direction after the field"),
    ("throughput.output_tok_s:up", "direction min or max"),
    ("throughput.bogus:max", "a numeric result field"),
    ("energy.reason:min", "a numeric result field"),
    (["latency.ttft_s.p90:min", "nope:max"], "a numeric result field"),
])
def test_bad_objective_is_one_config_problem_naming_the_key(spec: Any, says: str) -> None:
    found = [p for p in problems(ExperimentConfig(study=StudyConfig(objective=spec))) if p[0].startswith("study.")]
    assert len(found) == 1 and found[0][0] == "study.objective" and says in found[0][2]
    with pytest.raises(ConfigError):
        obj.parse(spec)


def test_objective_block_values_and_why_missing() -> None:
    from llem.results.example import example_result

    objectives = obj.parse(["throughput.output_tok_s:max", "energy.j_per_output_token:min"])
    measured, _ = example_result(overrides=[], output_tok_s=321.0, j_per_output_token=0.25)
    b = obj.block(measured, objectives)
    assert b["values"] == [321.0, pytest.approx(0.25)] and b["status"] == "ok" and b["missing"] == {}
    assert obj.hydra_value(b["values"]) == [321.0, pytest.approx(0.25)]
    assert obj.hydra_value([2.5]) == 2.5  # one objective: a float, as Optuna's single-direction path wants
    unmeasured, _ = example_result(overrides=[], output_tok_s=100.0)
    b = obj.block(unmeasured, objectives)
    assert b["values"] == [100.0, None] and b["status"] == "missing"
    assert b["missing"]["energy.j_per_output_token"].startswith("energy not measured")
    value = obj.hydra_value(b["values"])
    assert value[0] == 100.0 and math.isnan(value[1])
    failed, _ = example_result(overrides=[], status="failed", error={"type": "RuntimeError", "message": "boom"})
    b = obj.block(failed, objectives)
    assert b["values"] == [None, None] and "job failed: RuntimeError: boom" in b["missing"]["throughput.output_tok_s"]


def test_mean_over_cycles_and_a_missing_cycle_fails_the_trial() -> None:
    assert obj.mean_over_cycles([[1.0, 10.0], [3.0, 20.0]]) == [2.0, 15.0]
    assert obj.mean_over_cycles([[1.0, 10.0], [3.0, None]]) == [2.0, None]
    assert obj.mean_over_cycles([[1.0], [math.nan]]) == [None]


# -- llem's launcher under Optuna: cycles per trial, NaN for failed trials, directions --------------------
class _Ret:
    def __init__(self, value: Any, ok: bool = True, overrides: list[str] | None = None) -> None:
        from hydra.core.utils import JobStatus

        self.status = JobStatus.COMPLETED if ok else JobStatus.FAILED
        self._return_value = value
        self.overrides = overrides or []


def test_search_run_expands_cycles_and_returns_their_mean() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    run = SearchRun(obj.parse(["throughput.output_tok_s:max", "latency.e2e_s.p50:min"]), n_cycles=2)
    jobs, first = run.expand([["pytorch.batch_size=1"], ["pytorch.batch_size=4"]], initial_job_idx=3)
    assert first == 6  # trial 3 -> jobs 6, 7: unique across Optuna's launches
    assert jobs == [["pytorch.batch_size=1", "study_job.cycle=0"], ["pytorch.batch_size=4", "study_job.cycle=0"],
                    ["pytorch.batch_size=1", "study_job.cycle=1"], ["pytorch.batch_size=4", "study_job.cycle=1"]]
    rets = [_Ret([10.0, 1.0]), _Ret([40.0, 0.5]), _Ret([20.0, 3.0]), _Ret(RuntimeError("boom"), ok=False)]
    out = run.collapse(rets)
    assert len(out) == 2 and out[0].status == JobStatus.COMPLETED
    assert out[0]._return_value == [15.0, 2.0]  # mean over the trial's two cycles
    assert out[1].status == JobStatus.FAILED and isinstance(out[1]._return_value, obj.ObjectiveMissing)
    assert "cycle 1 of 2" in str(out[1]._return_value) and "boom" in str(out[1]._return_value)
    with pytest.raises(obj.ObjectiveMissing):  # what Optuna's sweeper reads: a failed trial
        _ = JobReturn(status=JobStatus.FAILED, _return_value=out[1]._return_value).return_value
    single = SearchRun(obj.parse("throughput.output_tok_s:max"), n_cycles=1)
    assert single.expand([["a=1"]], 5) == ([["a=1"]], 5)
    assert single.collapse([_Ret(7.5)])[0]._return_value == 7.5
    assert single.collapse([_Ret(math.nan)])[0].status == JobStatus.FAILED


def test_a_second_search_in_a_folder_starts_after_its_jobs(tmp_path: Path) -> None:
    from llem.search.launching import next_free_index
    from llem.study import manifest

    assert next_free_index(tmp_path / "none") == 0 and next_free_index(tmp_path) == 0
    (tmp_path / "0").mkdir()
    (tmp_path / "3").mkdir()
    (tmp_path / "report").mkdir()
    assert next_free_index(tmp_path) == 4
    manifest.ensure_jobs(tmp_path, [{"index": 7, "status": "failed"}])
    assert next_free_index(tmp_path) == 8


def test_optuna_directions_must_match_the_objectives() -> None:
    objectives = obj.parse(["energy.j_per_output_token:min", "throughput.output_tok_s:max"])
    check_directions(OmegaConf.create({"hydra": {"sweeper": {"direction": ["minimize", "maximize"]}}}), objectives)
    for wrong in (["minimize", "minimize"], "minimize", ["maximize", "minimize"]):
        with pytest.raises(ConfigError, match=r"hydra.sweeper.direction=.*allowed \[minimize,maximize\]"):
            check_directions(OmegaConf.create({"hydra": {"sweeper": {"direction": wrong}}}), objectives)


def test_plan_note_names_the_objectives() -> None:
    from llem.search.launching import objective_note

    note = objective_note(["energy.j_per_output_token:min", "throughput.output_tok_s:max"])
    assert "energy.j_per_output_token (minimize), throughput.output_tok_s (maximize)" in note
    assert "failed trial, not a failed study" in note and "hydra/sweeper=optuna" in note


def test_support_matrix_names_every_combination() -> None:
    for (sweeper, launcher) in [("optuna", "llem"), ("optuna", "basic"), ("optuna", "joblib"), ("llem", "llem")]:
        assert (sweeper, launcher) in SUPPORT
    line = support_line("optuna", "basic") or ""
    assert "no fresh process" in line and "no manifest" in line and "no cycles" in line
    assert "manifest" in SUPPORT[("optuna", "llem")] and "mean over cycles" in SUPPORT[("optuna", "llem")]


# -- tracking: what is logged, and never a secret -------------------------------------------------------
SECRET = "sk-llem-test-9f3c2e"


def _secret_result() -> dict[str, Any]:
    from llem.results.example import example_result

    result, _ = example_result(overrides=["pytorch.batch_size=2", f"dataset.path=/data/{SECRET}.jsonl"],
                               output_tok_s=250.0, j_per_output_token=0.5)
    result["config"]["openai"] = {"api_key_env": "LLEM_TEST_API_KEY", "base_url": "http://127.0.0.1:9"}
    result["config"]["bmc"] = {"password": "hunter2-bmc", "user": "admin"}
    result["environment"]["note"] = f"Authorization: Bearer {SECRET}"
    return result


def test_secrets_are_found_and_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_TEST_API_KEY", SECRET)
    result = _secret_result()
    secrets = secrets_of(result["config"])
    assert {SECRET, "LLEM_TEST_API_KEY", "hunter2-bmc"} <= secrets
    text = json.dumps(scrub(result, secrets))
    for s in (SECRET, "LLEM_TEST_API_KEY", "hunter2-bmc"):
        assert s not in text
    assert scrub({"hf_token": "abc123"}, ())["hf_token"] == REDACTED
    assert scrub(["tracking.uri=http://me:pa55@127.0.0.1:5000"], ()) == ["tracking.uri=http://***@127.0.0.1:5000"]
    assert scrub({"max_tokens": 16, "name": "x"}, ()) == {"max_tokens": 16, "name": "x"}  # not a secret
    params = job_params(result, secrets)
    assert params["override.pytorch.batch_size"] == "2" and SECRET not in json.dumps(params)
    metrics = job_metrics(result)
    assert metrics["throughput.output_tok_s"] == 250.0 and metrics["energy.j_per_output_token"] == pytest.approx(0.5)
    assert {"latency.ttft_s.p50", "latency.ttft_s.p90", "latency.tpot_s.p50", "latency.itl_s.p90"} <= set(metrics)
    result["energy"]["measured"] = False
    assert not any(k.startswith("energy.") for k in job_metrics(result))  # J figures only when measured


# -- report: Pareto front ---------------------------------------------------------------------------------
def test_pareto_front_and_best_trials_named(tmp_path: Path) -> None:
    import llem.results
    from llem.io import atomic_write_json
    from llem.report.pareto import pareto_front, search_section
    from llem.results.example import example_result

    assert pareto_front([[1, 5], [2, 2], [3, 3], [0, 9]], ["minimize", "minimize"]) == [0, 1, 3]
    assert pareto_front([[1, 5], [2, 2], [3, 3]], ["maximize", "minimize"]) == [1, 2]
    objectives = obj.parse(["throughput.output_tok_s:max", "latency.ttft_s.p50:min"])
    points = {1: (100.0, 0.010), 2: (180.0, 0.020), 4: (150.0, 0.030), 8: (90.0, 0.005)}
    for i, (b, (tput, ttft)) in enumerate(points.items()):
        for cycle in range(2):  # two cycles per trial: the report averages them
            result, _ = example_result(overrides=[f"pytorch.batch_size={b}"], batch_size=b, cycle=cycle,
                                       output_tok_s=tput * (0.9 if cycle else 1.1), ttft_s=ttft, job_index=2 * i + cycle)
            result["objective"] = obj.block(result, objectives)
            result["objective"]["values"][1] = ttft  # exact, not the example's jittered latencies
            atomic_write_json(tmp_path / str(2 * i + cycle) / "result.json", result)
    failed, _ = example_result(overrides=["pytorch.batch_size=16"], batch_size=16, status="failed", job_index=8)
    failed["objective"] = obj.block(failed, objectives)
    atomic_write_json(tmp_path / "8" / "result.json", failed)
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "result.json").write_text("42")  # a torn result: no row in the search section
    text = search_section(tmp_path, llem.results.load(tmp_path))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| pytorch")}
    assert set(rows) == {f"pytorch.batch_size={b}" for b in (1, 2, 4, 8, 16)}
    assert "**yes**" in rows["pytorch.batch_size=2"] and "**yes**" in rows["pytorch.batch_size=8"]
    assert "**yes**" in rows["pytorch.batch_size=1"]  # 100/s at 10 ms: beaten by neither 2 (20 ms) nor 8 (90/s)
    assert "**yes**" not in rows["pytorch.batch_size=4"]  # dominated by batch 2 (faster and lower TTFT)
    assert "failed: job failed" in rows["pytorch.batch_size=16"]
    assert "best `throughput.output_tok_s`: **pytorch.batch_size=2** = 180" in text
    assert "best `latency.ttft_s.p50`: **pytorch.batch_size=8** = 0.005" in text
    assert " 180 " in rows["pytorch.batch_size=2"]  # mean of 198 and 162 over the two cycles


def test_import_llem_stays_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, llem; assert callable(llem.run) or True; print(sorted(m for m in ('torch','hydra','pandas','mlflow','optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", "import sys, llem; print([m for m in ('torch','hydra','pandas',"
                          "'mlflow','optuna','transformers') if m in sys.modules])"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", code


# -- for real: Optuna, MLflow, the API ------------------------------------------------------------------
@pytest.fixture
def api(hydra_restore_singletons: None) -> Iterator[None]:
    from hydra.core.global_hydra import GlobalHydra

    yield
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_optuna_two_objective_search_with_llems_launcher(tmp_path: Path, llem_cache: Path, tiny_model: Path) -> None:
    import yaml

    from llem.report.pareto import pareto_front

    sweep = tmp_path / "search"
    t0 = time.perf_counter()
    proc = run_llem(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3",
                     "hydra.sweeper.sampler.seed=1",
                     "hydra.sweeper.direction=[maximize,minimize]", "pytorch.batch_size=choice(1,2,4,8)",
                     "study.objective=[throughput.output_tok_s:max,latency.e2e_s.p50:min]", *FAST,
                     f"hydra.sweep.dir={sweep}"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"optuna 6 trials: {time.perf_counter() - t0:.1f} s")
    assert "hydra/sweeper=optuna with hydra/launcher=llem: search: fresh process per trial" in proc.stderr
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(6)]
    assert len({r["identity"]["pid"] for r in results}) == 6 and os.getpid() not in {r["identity"]["pid"] for r in results}
    assert all(r["status"] == "completed" and r["objective"]["status"] == "ok" for r in results)
    for r in results:  # the value returned is the result's own figure
        assert r["objective"]["values"] == [r["throughput"]["output_tok_s"], r["latency"]["e2e_s"]["p50"]]
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert [j["index"] for j in manifest["jobs"]] == list(range(6))  # entries added batch after batch
    assert all(j["status"] == "completed" and j["objective"]["status"] == "ok" for j in manifest["jobs"])
    assert {j["start_method"] for j in manifest["jobs"]} == {"fork"}  # one process each, from llem's zygote
    assert "Failed experiment" not in proc.stdout + proc.stderr
    by_values = {tuple(r["objective"]["values"]): r for r in results}
    solutions = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["solutions"]
    values = [list(v) for v in by_values]
    front = {tuple(values[i]) for i in pareto_front(values, ["maximize", "minimize"])}
    assert {tuple(s["values"]) for s in solutions} == front and front
    for s in solutions:  # each Pareto trial's params are those its job ran with
        ran = by_values[tuple(s["values"])]
        assert ran["config"]["pytorch"]["batch_size"] == s["params"]["pytorch.batch_size"]
    from llem.report import build_report

    page = build_report(sweep).page.read_text()
    assert "## Search: Pareto front of the objectives" in page and "optimization_results.yaml" in page


@pytest.mark.slow
def test_missing_energy_is_a_failed_trial_not_a_crashed_search(tmp_path: Path, llem_cache: Path,
                                                                tiny_model: Path) -> None:
    import yaml

    sweep = tmp_path / "search"
    proc = run_llem(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_failure_rate=1.0",
                     "hydra.sweeper.direction=[maximize,minimize]",
                     "pytorch.batch_size=choice(1,2)", "energy=none", "study.n_cycles=2",
                     "study.objective=[throughput.output_tok_s:max,energy.j_per_output_token:min]", *FAST,
                     f"hydra.sweep.dir={sweep}"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the search ends normally
    out = proc.stdout + proc.stderr
    assert "llem: objective missing (a failed trial): energy.j_per_output_token: energy not measured" in out
    assert "Failed experiment: trial failed (cycle 0 of 2): ObjectiveMissing" in out  # Optuna's sweeper: failed trial
    assert "Traceback" not in out
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["solutions"] == []
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(2)]
    assert [r["identity"]["cycle"] for r in results] == [0, 1]  # the trial ran once per cycle
    for r in results:
        assert r["status"] == "completed" and r["objective"]["status"] == "missing"
        assert r["objective"]["values"][0] == r["throughput"]["output_tok_s"] and r["objective"]["values"][1] is None
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert [j["objective"]["status"] for j in manifest["jobs"]] == ["missing", "missing"]
    bad = run_llem(["-m", "n=2,3", "study.objective=throughput.nope:max", f"hydra.sweep.dir={tmp_path / 'bad'}"],
                   tmp_path, llem_cache)
    assert bad.returncode == 2 and "study.objective=throughput.nope:max is invalid: allowed a numeric result field" \
        in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "0").exists()  # refused at planning, before any job


@pytest.mark.slow
def test_api_run_and_run_study_tracked_in_mlflow(api: None, tmp_path: Path, llem_cache: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    import llem
    from llem.result import Result
    from llem.search.tracking import log_job

    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    r = llem.run("n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true", run_dir=str(tmp_path / "one"))
    print(f"llem.run fresh process: {time.perf_counter() - t0:.1f} s")
    assert isinstance(r, Result) and r.status == "completed" and r.job_dir == str(tmp_path / "one")
    assert r.identity["pid"] != os.getpid()  # a fresh process by default
    # the tiny model generates exactly max_output_tokens: 2 prompts x 4 tokens over the measured window
    assert r.workload["prompts"] == 2 and r.workload["output_tokens"] == 8
    assert r.throughput["output_tok_s"] == pytest.approx(8 / r.timing["window_s"], rel=1e-9)

    t0 = time.perf_counter()
    sweep = tmp_path / "study"
    df = llem.run_study("n=2,3", *FAST[1:], "tracking=mlflow", sweep_dir=sweep)
    print(f"llem.run_study 2 jobs + MLflow: {time.perf_counter() - t0:.1f} s")
    assert len(df) == 2 and list(df["status"]) == ["completed", "completed"] and list(df["override.n"]) == [2, 3]
    assert (sweep / "manifest.json").is_file() and (sweep / "plan.json").is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlflow.db'}")
    exp = client.get_experiment_by_name("llem")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("llem.kind") == "study"]
    jobs = [x for x in runs if x.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(jobs) == 2
    assert {x.data.tags["mlflow.parentRunId"] for x in jobs} == {parents[0].info.run_id}
    for row in df.itertuples():
        run = next(x for x in jobs if x.data.params["override.n"] == str(getattr(row, "_6", None) or row[df.columns.get_loc("override.n") + 1]))
        assert run.data.tags["llem.config_hash"] == row.config_hash and run.data.tags["llem.status"] == "completed"
        assert run.data.tags["llem.cycle"] == "0" and run.data.tags["llem.study_design_hash"] == row.study_design_hash
        assert run.data.metrics["throughput.output_tok_s"] == pytest.approx(df.loc[row.Index, "throughput.output_tok_s"])
        assert run.data.metrics["latency.ttft_s.p90"] == pytest.approx(df.loc[row.Index, "latency.ttft_s.p90"])
        assert run.data.params["backend"] == "pytorch" and run.data.params["pytorch.max_output_tokens"] == "4"
        assert not any(k.startswith("energy.") for k in run.data.metrics)  # not measured on this host
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["result.json"]
    assert client.list_artifacts(parents[0].info.run_id, "report")  # the report's page and plots
    assert parents[0].info.status == "FINISHED"
    assert (sweep / ".mlflow-artifacts").is_dir() and not (tmp_path / "mlruns").exists()  # beside the store

    # a job whose config names a key variable: neither the name nor its value is logged, anywhere
    monkeypatch.setenv("LLEM_TEST_API_KEY", SECRET)
    job = tmp_path / "secret_job"
    from llem.io import atomic_write_json

    atomic_write_json(job / "result.json", _secret_result())
    rid = log_job(f"sqlite:///{sweep / 'mlflow.db'}", "llem", job, parents[0].info.run_id, ())
    logged = client.get_run(rid)
    artifact = Path(client.download_artifacts(rid, "result.json", str(tmp_path / "dl"))).read_text()
    for blob in (json.dumps(logged.data.params), json.dumps(logged.data.tags), artifact):
        for s in (SECRET, "LLEM_TEST_API_KEY", "hunter2-bmc"):
            assert s not in blob
    assert logged.data.params["override.pytorch.batch_size"] == "2"


@pytest.mark.slow
def test_single_objective_optuna_with_hydras_basic_launcher(tmp_path: Path, llem_cache: Path, tiny_model: Path) -> None:
    """The support matrix's optuna x basic row: jobs in the sweep's process, one float per trial."""
    import yaml

    sweep = tmp_path / "basic"
    proc = run_llem(["-m", "hydra/sweeper=optuna", "hydra/launcher=basic", "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.direction=maximize", "pytorch.batch_size=choice(1,2)",
                     "study.objective=throughput.output_tok_s:max", *FAST, f"hydra.sweep.dir={sweep}"],
                    tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llem: hydra/sweeper=optuna with hydra/launcher=basic: search inside this one process" in proc.stderr
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(2)]
    assert len({r["identity"]["pid"] for r in results}) == 1  # basic: no fresh process per job
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r["throughput"]["output_tok_s"] for r in results)
    winner = max(results, key=lambda r: r["throughput"]["output_tok_s"])
    assert best["best_params"]["pytorch.batch_size"] == winner["config"]["pytorch"]["batch_size"]
    assert not (sweep / "manifest.json").exists()  # no llem launcher, no manifest (as the docs' table says)
