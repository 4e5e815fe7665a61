"""llem's sweeper: its fast compose equals Hydra's, its expansion equals BasicSweeper's, and real
multiruns (`python -m llem -m ...`) give the planned counts, order and hashes in plan, multirun.yaml,
manifest and every job's result.json."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import REPO, read_result, run_llem
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

import llem.config.store  # noqa: F401
from hydra_plugins.llem_sweeper.compose import FastComposer, sweep_keys
from llem.config.paths import conf_dir
from llem.config.schema import BACKENDS
from llem.study.hashing import config_hash
from llem.study.scope import expand

SMALL = ["n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true", "dataset.input_tokens=8"]


@pytest.fixture(scope="module")
def loader() -> Iterator[Any]:
    with initialize_config_dir(str(conf_dir()), version_base=None):
        yield GlobalHydra.instance().config_loader()


def _master(loader: Any, *overrides: str) -> Any:
    return loader.load_configuration("config", ["hydra.sweep.dir=/tmp/unused", *overrides], RunMode.MULTIRUN)


def _hydra_compose(loader: Any, master: Any, overrides: list[str]) -> dict[str, Any] | str:
    """What Hydra itself composes for a job (BasicSweeper/launchers), without the hydra node."""
    try:
        cfg = loader.load_sweep_config(master, overrides)
    except Exception as e:
        return f"error: {type(e).__name__}"
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


JOBS = [
    ["pytorch.batch_size=3", "precision=fp16"],
    ["model=tiny-llama", "pytorch.batch_size=2", "++n=3"],
    ["backend=vllm", "vllm.max_num_seqs=8", "precision=bf16", "++vllm.engine_args.max_logprobs=1"],
    ["+experiment=batch_sweep", "pytorch.batch_size=4"],
    ["+energy.extra.site=lab", "warmup.max_output_tokens=null", "study.n_cycles=4"],
    ["dataset=jsonl", "dataset.path=/data/p.jsonl", "dataset.column=prompt"],
    ["pytorch={batch_size:5,top_k:7}", "seed=9"],
    ["vllm.max_num_seqs=8"],  # the pytorch job has no vllm section: Hydra fails, so must we
    ["pytorch.batch_size=abc"],
    ["+n=5"],  # + on an existing key: Hydra refuses
    ["model=nope"],
    [],
]


def test_fast_compose_equals_hydra_compose_job_after_job(loader: Any) -> None:
    master = _master(loader, "precision=fp32")
    composer = FastComposer(loader, master)
    for overrides in JOBS:
        expected = _hydra_compose(loader, master, overrides)
        cand = composer.candidate(overrides)
        if isinstance(expected, str):
            assert cand.config_hash is None and cand.problems[0].startswith("cannot compose"), overrides
            continue
        with composer.composed(overrides) as cfg:
            fast = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        assert fast == expected, overrides
        assert OmegaConf.to_container(composer.compose(overrides), resolve=True, enum_to_str=True) == expected
        assert cand.config_hash == config_hash(expected), overrides
    # the shared base configs came back untouched after every job
    assert composer.candidate([]).config_hash == config_hash(_hydra_compose(loader, master, []))  # type: ignore[arg-type]
    assert composer.composes == 5  # one Hydra compose per distinct set of group overrides (model=nope fails)


def test_expansion_equals_basic_sweeper_without_foreign_backend_keys(loader: Any) -> None:
    master = _master(loader)
    args = ["precision=fp16,bf16", "n=range(1,4)", "model=glob(tiny*)", "+experiment=batch_sweep",
            "seed=choice(1,2)", "pytorch.batch_size=1,2", "quiet=true"]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
    ours = expand(sweep_keys(parsed), BACKENDS, "pytorch").configs
    assert ours == BasicSweeper.split_arguments(parsed, None)[0]
    assert len(ours) == 2 * 3 * 2 * 2 * 2
    assert master.backend == "pytorch"


def test_sweeping_study_settings_is_refused(loader: Any) -> None:
    parser = OverridesParser.create(config_loader=loader)
    with pytest.raises(Exception, match="study.\\* settings cannot be swept"):
        sweep_keys(parser.parse_overrides(["study.n_cycles=1,2"]))
    with pytest.raises(Exception, match="study_job.\\* is set by llem's sweeper"):
        sweep_keys(parser.parse_overrides(["study_job.cycle=3"]))


# -- real multiruns ----------------------------------------------------------------------------------

def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _dry(args: list[str], tmp: Path, cache: Path, name: str = "dry") -> tuple[Any, Path]:
    sweep = tmp / name
    proc = run_llem(["-m", *args, "study.dry_run=true", f"hydra.sweep.dir={sweep}"], tmp, cache, timeout=120)
    return proc, sweep


@pytest.mark.slow
def test_backend_scoped_dry_run_plans_four_plus_four(tmp_path: Path, llem_cache: Path) -> None:
    proc, sweep = _dry(["backend=pytorch,vllm", "precision=fp16,bf16", "pytorch.batch_size=1,8",
                        "vllm.max_num_seqs=64,256", "study.n_cycles=2"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    plan = _json(sweep / "plan.json")
    assert plan["counts"]["valid_configs"] == 8 and plan["counts"]["jobs"] == 16
    backends = [c["backend"] for c in plan["configs"]]
    assert backends.count("pytorch") == 4 and backends.count("vllm") == 4
    for c in plan["configs"]:
        other = "vllm" if c["backend"] == "pytorch" else "pytorch"
        assert not any(o.startswith(other + ".") for o in c["overrides"])
    assert "8 configs × 2 cycles = 16 jobs" in proc.stdout and "nothing launched" in proc.stdout
    assert (sweep / "plan.txt").read_text().startswith("llem study plan · design " + plan["study_design_hash"])
    assert not (sweep / "manifest.json").exists() and not (sweep / "0").exists()


@pytest.mark.slow
def test_single_valued_backend_keys_apply_to_their_backend_only(tmp_path: Path, llem_cache: Path) -> None:
    # The base config of a multirun has the default backend only; a plain `vllm.max_tokens=8` must still
    # reach the vllm jobs (and not crash the compose of the pytorch base config).
    proc, sweep = _dry(["backend=pytorch,vllm", "vllm.max_tokens=8", "pytorch.batch_size=4"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    by_backend = {c["backend"]: c["overrides"] for c in _json(sweep / "plan.json")["configs"]}
    assert "vllm.max_tokens=8" in by_backend["vllm"] and not any("batch_size" in o for o in by_backend["vllm"])
    assert "pytorch.batch_size=4" in by_backend["pytorch"] and not any("max_tokens" in o for o in by_backend["pytorch"])


@pytest.mark.slow
def test_saved_experiment_runs_by_name_with_shuffled_cycles(tmp_path: Path, llem_cache: Path) -> None:
    proc, sweep = _dry(["+experiment=batch_sweep", "study.max_jobs=50"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    plan = _json(sweep / "plan.json")
    assert [c["overrides"][0] for c in plan["configs"]] == [f"pytorch.batch_size={b}" for b in (1, 2, 4, 8, 16, 32)]
    jobs = plan["jobs"]
    assert plan["settings"]["order"] == "shuffled" and len(jobs) == 18
    cycles = [[j["config"] for j in jobs if j["cycle"] == k] for k in range(3)]
    assert all(sorted(c) == list(range(6)) for c in cycles) and len({tuple(c) for c in cycles}) > 1
    assert [j["cycle"] for j in jobs] == [0] * 6 + [1] * 6 + [2] * 6
    assert plan["settings"]["seed_used"] == int(plan["study_design_hash"][:8], 16)
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    assert multirun["hydra"]["sweeper"]["params"] == {"pytorch.batch_size": "1,2,4,8,16,32"}
    assert multirun["hydra"]["sweeper"]["plan"]["jobs"] == 18
    # the same design re-planned gives the same order (seed from the design hash)
    again, sweep2 = _dry(["+experiment=batch_sweep", "study.max_jobs=50"], tmp_path, llem_cache, "again")
    assert again.returncode == 0
    assert [j["config"] for j in _json(sweep2 / "plan.json")["jobs"]] == [j["config"] for j in jobs]


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "configs", "jobs"), [("precision_backend", 8, 24), ("dataset_compare", 4, 12)])
def test_shipped_example_studies_plan_what_their_comments_say(tmp_path: Path, llem_cache: Path, experiment: str,
                                                              configs: int, jobs: int) -> None:
    proc, sweep = _dry([f"+experiment={experiment}"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    plan = _json(sweep / "plan.json")
    assert plan["counts"]["valid_configs"] == configs and plan["counts"]["jobs"] == jobs
    assert f"{configs} configs" in (REPO / "conf" / "experiment" / f"{experiment}.yaml").read_text()


@pytest.mark.slow
def test_invalid_sweeps_warn_or_refuse_before_anything_runs(tmp_path: Path, llem_cache: Path) -> None:
    proc, sweep = _dry(["pytorch.decoding=sample", "pytorch.num_beams=1,2,3"], tmp_path, llem_cache)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: 2 of 3 configs (67%) are invalid and skipped" in proc.stdout
    assert "reason: pytorch.num_beams=2 is invalid: allowed 1 with pytorch.decoding=sample" in proc.stdout

    none = tmp_path / "none"
    proc = run_llem(["-m", "pytorch.decoding=sample", "pytorch.num_beams=2,3", f"hydra.sweep.dir={none}"],
                    tmp_path, llem_cache, timeout=120)
    assert proc.returncode == 2
    assert "all 2 configs of the study are invalid; nothing was run" in proc.stderr

    def written() -> list[str]:  # the folder lock (.llem.lock, llem.study.lock) aside, nothing
        return sorted(p.name for p in none.glob("*") if not p.name.startswith(".llem"))

    assert written() == []

    proc = run_llem(["-m", "pytorch.batch_size=1,2,3", "study.max_jobs=2", f"hydra.sweep.dir={none}"],
                    tmp_path, llem_cache, timeout=120)
    assert proc.returncode == 2 and "above study.max_jobs=2" in proc.stderr and written() == []


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, llem_cache: Path) -> tuple[Path, Any]:
    """One real study, 2 configs × 2 cycles, interleaved, with Hydra's BasicLauncher (jobs in-process:
    fast; the sweeper works with any launcher). The resume test below uses the default, llem's."""
    root = tmp_path_factory.mktemp("study")
    sweep = root / "study"
    proc = run_llem(["-m", "pytorch.batch_size=1,2", "study.n_cycles=2", "study.order=interleaved", *SMALL,
                     f"hydra.sweep.dir={sweep}", "hydra/launcher=basic"], root, llem_cache, timeout=300)
    return sweep, proc


@pytest.mark.slow
def test_study_runs_the_plan_in_order_and_every_result_knows_its_place(study: tuple[Path, Any]) -> None:
    sweep, proc = study
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.index("llem study plan") < proc.stdout.index("#0 : pytorch.batch_size=1")  # plan first
    plan = _json(sweep / "plan.json")
    dhash = plan["study_design_hash"]
    assert plan["counts"] == {"configs": 2, "valid_configs": 2, "skipped_configs": 0, "cycles": 2, "jobs": 4,
                              "skipped_jobs": 0, "already_completed": 0, "to_launch": 4}
    results = [read_result(sweep / str(i)) for i in range(4)]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert [r["workload"]["batch_size"] for r in results] == [1, 2, 1, 2]  # interleaved: A B A B
    assert [r["identity"]["cycle"] for r in results] == [0, 0, 1, 1]
    assert [r["identity"]["job_index"] for r in results] == [0, 1, 2, 3]
    assert {r["identity"]["study_design_hash"] for r in results} == {dhash}
    for r, job in zip(results, plan["jobs"]):
        assert r["identity"]["config_hash"] == job["config_hash"] == config_hash(r["config"])  # planned = run
    assert results[0]["identity"]["config_hash"] == results[2]["identity"]["config_hash"]
    assert results[0]["identity"]["config_hash"] != results[1]["identity"]["config_hash"]
    starts = [r["started_at"] for r in results]
    assert starts == sorted(starts)  # launched in plan order
    m = _json(sweep / "manifest.json")
    assert m["study_design_hash"] == dhash and m["status"] == "completed"
    assert [(j["index"], j["status"]) for j in m["jobs"]] == [(i, "completed") for i in range(4)]
    mr = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"]["plan"]
    assert mr["study_design_hash"] == dhash and (mr["configs"], mr["cycles"], mr["jobs"]) == (2, 2, 4)
    assert [line.split()[:2] for line in mr["jobs_in_order"]] == [["0", "cycle=0"], ["1", "cycle=0"],
                                                                  ["2", "cycle=1"], ["3", "cycle=1"]]
    # the sweeper's own end-of-study summary: one row per config, statistics over its 2 cycles
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["config"]) == ["pytorch.batch_size=1", "pytorch.batch_size=2"]
    assert (summary["n_completed"] == 2).all()
    # each config's mean over its own two cycles (jobs 0, 2: batch 1; jobs 1, 3: batch 2), as the results hold it
    tok_s = [r["throughput"]["output_tok_s"] for r in results]
    mean = dict(zip(summary["config"], summary["throughput.output_tok_s.mean"]))
    assert mean == {"pytorch.batch_size=1": pytest.approx((tok_s[0] + tok_s[2]) / 2, rel=1e-6),
                    "pytorch.batch_size=2": pytest.approx((tok_s[1] + tok_s[3]) / 2, rel=1e-6)}
    assert f"llem study {dhash}: 2 config(s), 4 job(s): 4 completed, 0 failed/interrupted" in proc.stdout


@pytest.mark.slow
def test_resume_runs_only_what_did_not_complete_and_refuses_another_design(
        study: tuple[Path, Any], llem_cache: Path) -> None:
    sweep, first = study
    assert first.returncode == 0
    copy = sweep.parent / "resumed"
    shutil.copytree(sweep, copy)
    (copy / "2" / "result.json").unlink()  # job 2 never finished
    kept = {i: read_result(copy / str(i))["started_at"] for i in (0, 1, 3)}
    args = ["-m", "pytorch.batch_size=1,2", "study.n_cycles=2", "study.order=interleaved", *SMALL,
            f"hydra.sweep.dir={copy}"]  # the default launcher (llem's) continues a study another one began
    proc = run_llem([*args, "study.resume=true"], copy.parent, llem_cache, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 already completed, 1 to run" in proc.stdout
    assert "0:c0/0✓ 1:c1/0✓ 2:c0/1 3:c1/1✓" in proc.stdout  # the plan marks what is already done
    assert "[llem] [----------] 0/1 jobs · job 2: pytorch.batch_size=1" in proc.stdout  # progress between jobs
    assert "[llem] job 2 completed in" in proc.stdout
    assert {i: read_result(copy / str(i))["started_at"] for i in (0, 1, 3)} == kept  # not run again
    r2 = read_result(copy / "2")
    assert r2["status"] == "completed" and r2["identity"]["cycle"] == 1 and r2["workload"]["batch_size"] == 1
    m = _json(copy / "manifest.json")
    assert [j["status"] for j in m["jobs"]] == ["completed"] * 4 and m["status"] == "completed"

    proc = run_llem(args, copy.parent, llem_cache, timeout=120)  # same folder without resume
    assert proc.returncode == 2 and "already holds a study" in proc.stderr
    other = [a.replace("pytorch.batch_size=1,2", "pytorch.batch_size=1,4") for a in args]
    proc = run_llem([*other, "study.resume=true"], copy.parent, llem_cache, timeout=120)
    assert proc.returncode == 2
    assert f"holds study design {m['study_design_hash']}, but this command plans design" in proc.stderr


@pytest.mark.slow
def test_skipped_and_failed_jobs_land_in_the_manifest_and_the_exit_code(tmp_path: Path, llem_cache: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_llem(["-m", "pytorch.decoding=sample", "pytorch.num_beams=1,2", "debug.fault=none,raise", *SMALL,
                     f"hydra.sweep.dir={sweep}", "hydra/launcher=basic"], tmp_path, llem_cache, timeout=200)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 2 jobs failed" in proc.stderr
    m = _json(sweep / "manifest.json")
    by_status = {s: [j for j in m["jobs"] if j["status"] == s] for s in ("completed", "failed", "skipped")}
    assert [len(by_status[s]) for s in ("completed", "failed", "skipped")] == [1, 1, 2]
    assert all("pytorch.num_beams=2 is invalid" in j["reason"] for j in by_status["skipped"])
    assert "debug.fault=raise" in by_status["failed"][0]["overrides"]
    assert by_status["failed"][0]["error"]["type"] == "RuntimeError"
    assert m["status"] == "failed"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # skipped jobs never ran
