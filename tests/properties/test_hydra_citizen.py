"""llem's plugins as Hydra users and API callers see them: Hydra's identity of a job (overrides,
override_dirname) holds only the user's overrides, multiruns through the Python API leave no zygote
behind and report a failed study as an exception, launcher knobs live in `hydra.launcher.*` (with
`study.*` aliases), `study.max_jobs` refuses from the job count before composing, and Hydra's joblib
launcher works with llem's sweeper (manifest, summary, resume)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import read_result, run_llem
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobStatus

from llem.config.paths import conf_dir
from llem.config.schema import StudyConfig, StudyJobConfig
from llem.errors import ConfigError
from llem.launch.settings import LaunchSettings
from llem.study.plan import StudyError, check_job_count

FAST = ["n=2", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "quiet=true"]


def multirun(overrides: list[str]) -> Any:
    """One multirun through Hydra's API in this process (as a notebook or test would)."""
    import llem.app
    from llem.config.store import register

    register()  # the schema (hydra_restore_singletons may have dropped it)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
        return GlobalHydra.instance().hydra.multirun(config_name="config", task_function=llem.app.run_from_hydra,
                                                     overrides=overrides)


def zygotes() -> list[psutil.Process]:
    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "llem.launch.zygote" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture
def api(hydra_restore_singletons: None) -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


# -- launcher settings: hydra.launcher.* only (the study.* aliases are gone) ------------------------------
def test_launcher_knobs_are_one_dataclass_and_study_aliases_are_refused() -> None:
    from dataclasses import fields

    from hydra_plugins.llem_launcher.llem_launcher import LlemLauncherConf
    from llem.config.overrides import check_argv

    assert [f.name for f in fields(LlemLauncherConf)] == [*LaunchSettings.names(), "_target_"]  # declared once
    assert not {f.name for f in fields(StudyConfig)} & set(LaunchSettings.names())
    assert LaunchSettings.resolve({"timeout_s": 30}).timeout_s == 30
    with pytest.raises(ConfigError) as e:
        LaunchSettings.resolve({"on_unhealthy": "panic", "gpus_per_job": -1})
    assert "hydra.launcher.on_unhealthy=panic" in str(e.value) and "hydra.launcher.gpus_per_job=-1" in str(e.value)
    for name in LaunchSettings.names():
        problem = check_argv(["-m", f"study.{name}=1"])
        assert problem is not None and f"set hydra.launcher.{name} instead" in problem, name


def test_launcher_knobs_compose_under_hydra_launcher(api: None) -> None:
    from hydra import compose
    from hydra.utils import instantiate

    from llem.config.store import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
        cfg = compose(config_name="config", overrides=["hydra.launcher.timeout_s=7", "hydra.launcher.kill_grace_s=3"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    s = launcher.launch_settings()
    assert (s.timeout_s, s.kill_grace_s, s.fresh_process) == (7, 3, "auto")


def test_the_study_tag_round_trips_and_is_not_the_users_override() -> None:
    from llem.study.jobtag import TAG_KEY, parse_tag, study_job_of, tag_override, user_overrides

    tag = tag_override(7, 1, "0123456789012345", "1e23456789012345")
    assert tag == "++hydra.job.env_set.LLEM_STUDY_JOB='1:0123456789012345:1e23456789012345:7'"
    want = {"cycle": 1, "config_hash": "0123456789012345", "study_design_hash": "1e23456789012345", "index": 7}
    assert study_job_of(["pytorch.batch_size=2", tag, "n=3"]) == want  # digit-only hashes stay strings
    assert user_overrides(["pytorch.batch_size=2", tag, "study_job.cycle=1", "n=3"]) == ["pytorch.batch_size=2", "n=3"]
    old = ["study_job.cycle=1", "study_job.config_hash='0123456789012345'",  # folders of older llem versions
           "study_job.study_design_hash='1e23456789012345'", "study_job.index=7", "n=3"]
    assert study_job_of(old) == want
    assert study_job_of(["n=3"]) == {}
    for bad in ["1:abc:def", "x:abc:def:2", "1:abc::2", "1:abc:def:-2"]:
        with pytest.raises(ConfigError, match=f"{TAG_KEY}={bad} is invalid: allowed '<cycle>:<config_hash>"):
            parse_tag(bad)


def test_the_job_reads_its_place_from_hydras_env_set_into_study_job() -> None:
    from omegaconf import OmegaConf

    from llem.app import _set_study_job
    from llem.config.schema import ExperimentConfig

    cfg = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(cfg, True)
    _set_study_job(cfg, {"LLEM_STUDY_JOB": "2:0123456789012345:1e23456789012345:9", "OTHER": "x"})
    assert OmegaConf.to_container(cfg.study_job) == {"cycle": 2, "config_hash": "0123456789012345",
                                                     "study_design_hash": "1e23456789012345", "index": 9}
    plain = OmegaConf.structured(ExperimentConfig(study_job=StudyJobConfig(cycle=3)))  # study_job.cycle=3 by hand
    _set_study_job(plain, {})
    assert plain.study_job.cycle == 3 and plain.study_job.index is None
    with pytest.raises(ConfigError, match="hydra.job.env_set.LLEM_STUDY_JOB=oops is invalid"):
        _set_study_job(cfg, {"LLEM_STUDY_JOB": "oops"})


def test_a_torn_jobs_identity_comes_from_the_tag_hydra_saved(tmp_path: Path) -> None:
    from llem.study.jobfiles import identity_from_overrides
    from llem.study.jobtag import tag_override

    (tmp_path / ".hydra").mkdir()
    hydra_yaml = {"hydra": {"overrides": {"hydra": ["hydra.sweep.dir=x", tag_override(4, 2, "00c0ffee00c0ffee", "d35")],
                                          "task": ["n=2"]}}}
    (tmp_path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- n=2\n")
    assert identity_from_overrides(tmp_path) == {"cycle": 2, "config_hash": "00c0ffee00c0ffee",
                                                 "study_design_hash": "d35", "job_index": 4}


# -- the cap before the work -------------------------------------------------------------------------------
def test_max_jobs_counts_configs_times_cycles() -> None:
    check_job_count(200, StudyConfig())
    check_job_count(100, StudyConfig(n_cycles=2))
    check_job_count(10_000, StudyConfig(allow_over_max_jobs=True))
    with pytest.raises(StudyError, match="201 configs × 1 cycles = 201 jobs, above study.max_jobs=200"):
        check_job_count(201, StudyConfig())
    with pytest.raises(StudyError, match="= 202 jobs"):
        check_job_count(101, StudyConfig(n_cycles=2))


def test_max_jobs_refuses_20000_jobs_before_composing_or_starting_a_zygote(
        api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_plugins.llem_sweeper.compose import FastComposer
    from llem.launch.zygote import ForkServer

    calls = {"compose": 0, "zygote": 0}
    real = FastComposer.candidate

    def counting(self: Any, overrides: Any) -> Any:
        calls["compose"] += 1
        return real(self, overrides)

    monkeypatch.setattr(FastComposer, "candidate", counting)
    monkeypatch.setattr(ForkServer, "start", lambda self: calls.__setitem__("zygote", 1) or self)
    with pytest.raises(StudyError, match="20000 configs × 1 cycles = 20000 jobs, above study.max_jobs=200"):
        multirun(["n=range(1,20001)", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert calls == {"compose": 0, "zygote": 0}
    assert not [p.name for p in (tmp_path / "s").glob("*") if not p.name.startswith(".llem")]  # no plan, no manifest


# -- Hydra's identity, API multiruns, no zygote left -------------------------------------------------------
@pytest.mark.slow
def test_api_multiruns_keep_hydras_identity_and_leave_no_zygote(api: None, tmp_path: Path, tiny_model: Path) -> None:
    from llem.study.exits import StudyFailed

    sweep = tmp_path / "ok"
    returns = multirun(["pytorch.batch_size=1,2", *FAST, f"hydra.sweep.dir={sweep}",
                        "hydra.sweep.subdir=${hydra.job.override_dirname}", "hydra.sweeper.max_batch_size=1"])
    assert zygotes() == []
    assert [len(batch) for batch in returns] == [1, 1]  # hydra.sweeper.max_batch_size=1: one launch per job
    flat = [r for batch in returns for r in batch]
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert names == sorted(",".join(sorted(r.overrides)) for r in flat)  # the user's overrides, no hashes
    assert names[0] == "n=2,pytorch.batch_size=1,pytorch.max_output_tokens=4,quiet=True,warmup.n_batches=0"
    plan = json.loads((sweep / "plan.json").read_text())
    for index, ret in enumerate(flat):
        assert ret.status == JobStatus.COMPLETED
        assert not any(o.startswith("study_job.") for o in ret.overrides)
        assert ret.hydra_cfg.hydra.overrides.task == ret.overrides
        job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        saved = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        assert sorted(saved) == sorted(ret.overrides) and len(saved) == len(FAST) + 1
        ident = read_result(job_dir)["identity"]
        planned = plan["jobs"][index]
        assert (ident["job_index"], ident["cycle"], ident["config_hash"], ident["study_design_hash"]) == (
            index, planned["cycle"], planned["config_hash"], plan["study_design_hash"])
        assert sorted(ident["overrides"]) == sorted(saved)
    m = json.loads((sweep / "manifest.json").read_text())
    assert [j["start_method"] for j in m["jobs"]] == ["fork", "fork"]  # the zygote served, then went away

    with pytest.raises(StudyFailed) as e:  # a failed study is an exception the caller catches
        multirun(["debug.fault=raise", *FAST, f"hydra.sweep.dir={tmp_path / 'failed'}"])
    assert (e.value.failed, e.value.total, e.value.exit_code) == (1, 1, 1)
    assert zygotes() == []
    with pytest.raises(StudyFailed):
        multirun(["debug.fault=exit", *FAST, f"hydra.sweep.dir={tmp_path / 'crashed'}"])
    assert zygotes() == []


# -- hydra-joblib-launcher with llem's sweeper -------------------------------------------------------------
@pytest.mark.slow
def test_joblib_launcher_runs_a_study_with_manifest_summary_and_resume(tmp_path: Path, llem_cache: Path,
                                                                       tiny_model: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "pytorch.batch_size=1,2", *FAST,
            f"hydra.sweep.dir={sweep}"]
    p = run_llem(args, tmp_path, llem_cache, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "hydra/launcher=joblib" in p.stdout and "no fresh process per job" in p.stdout  # the plan says so
    m = json.loads((sweep / "manifest.json").read_text())
    assert [j["status"] for j in m["jobs"]] == ["completed", "completed"] and m["status"] == "completed"
    results = [read_result(sweep / str(i)) for i in range(2)]
    assert [r["identity"]["job_index"] for r in results] == [0, 1]
    assert [r["workload"]["batch_size"] for r in results] == [1, 2]
    assert (sweep / "summary.csv").is_file()

    (sweep / "1" / "result.json").unlink()  # job 1 never finished
    kept = results[0]["started_at"]
    p = run_llem([*args, "study.resume=true"], tmp_path, llem_cache, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "1 already completed, 1 to run" in p.stdout
    assert read_result(sweep / "0")["started_at"] == kept
    assert read_result(sweep / "1")["status"] == "completed"


# -- the study tag through launchers that compose each job themselves ---------------------------------------
SUBDIR = "hydra.sweep.subdir=${hydra.job.override_dirname}"
USERS = [[f"pytorch.batch_size={b}", *(o.replace("=true", "=True") for o in FAST)] for b in (1, 2)]  # as Hydra saves them


def assert_identity_is_the_users(sweep: Path, users: list[list[str]]) -> dict[str, dict[str, Any]]:
    """Every job folder: named by the user's overrides only, `.hydra/overrides.yaml` = the user's
    overrides, and result.json knows the job's place in the study as plan.json planned it."""
    plan = json.loads((sweep / "plan.json").read_text())
    planned = {j["index"]: j for j in plan["jobs"]}
    folders = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert sorted(f.name for f in folders) == sorted(
        ",".join(sorted(u)) for u in users)  # override_dirname: no hashes
    out = {}
    for folder in folders:
        saved = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert sorted(saved) in [sorted(u) for u in users]
        task = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["overrides"]["task"]
        assert task == saved
        r = read_result(folder)
        ident = r["identity"]
        job = planned[ident["job_index"]]
        assert (ident["cycle"], ident["config_hash"], ident["study_design_hash"]) == (
            job["cycle"], job["config_hash"], plan["study_design_hash"])
        assert r["config"]["study_job"] == {"cycle": job["cycle"], "config_hash": job["config_hash"],
                                            "study_design_hash": plan["study_design_hash"], "index": job["index"]}
        assert sorted(ident["overrides"]) == sorted(saved)
        out[folder.name] = r
    m = json.loads((sweep / "manifest.json").read_text())  # the manifest found the launcher's folder names
    assert m["status"] == "completed" and sorted(Path(j["job_dir"]).name for j in m["jobs"]) == sorted(out)
    assert [j["status"] for j in m["jobs"]] == ["completed"] * len(users)
    return out


@pytest.mark.slow
def test_basic_launcher_keeps_hydras_identity_and_resume_finds_jobs_by_their_tag(
        api: None, tmp_path: Path, tiny_model: Path) -> None:
    sweep = tmp_path / "basic"
    args = ["hydra/launcher=basic", "pytorch.batch_size=1,2", *FAST, f"hydra.sweep.dir={sweep}", SUBDIR]
    returns = multirun(args)
    users = USERS
    flat = [r for batch in returns for r in batch]
    assert sorted(sorted(r.overrides) for r in flat) == sorted(sorted(u) for u in users)  # JobReturn.overrides
    assert "LLEM_STUDY_JOB" not in os.environ  # Hydra set it for the task only
    results = assert_identity_is_the_users(sweep, users)

    kept, torn = sorted(results)  # batch_size=1 stays; batch_size=2's result.json is torn
    (sweep / torn / "result.json").write_text("null\n")
    multirun([*args, "study.resume=true", "hydra.job.config.override_dirname.exclude_keys=[study.resume]"])  # same folders
    assert read_result(sweep / kept)["started_at"] == results[kept]["started_at"]  # not run again
    again = read_result(sweep / torn)  # found by its tag, run again in its own folder
    assert again["status"] == "completed" and list((sweep / torn).glob("result.json.torn-*"))
    keys = ("job_index", "cycle", "config_hash", "study_design_hash")
    assert [again["identity"][k] for k in keys] == [results[torn]["identity"][k] for k in keys]
    m = json.loads((sweep / "manifest.json").read_text())
    assert m["status"] == "completed" and [j["status"] for j in m["jobs"]] == ["completed", "completed"]


@pytest.mark.slow
def test_joblib_launcher_keeps_hydras_identity(tmp_path: Path, llem_cache: Path, tiny_model: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "joblib"
    p = run_llem(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "pytorch.batch_size=1,2", *FAST,
                  f"hydra.sweep.dir={sweep}", SUBDIR], tmp_path, llem_cache, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert_identity_is_the_users(sweep, USERS)


# -- planning speed: the fast paths give what OmegaConf gives -----------------------------------------------
def test_plain_values_and_typed_config_equal_omegaconfs_own(api: None) -> None:
    from e2e.test_sweeper import JOBS
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from hydra_plugins.llem_sweeper.compose import FastComposer, to_typed
    from llem.config.schema import ExperimentConfig
    from llem.config.store import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="llem"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra.sweep.dir=/tmp/unused"], RunMode.MULTIRUN)
        composer = FastComposer(loader, master)
        checked = 0
        for overrides in [*JOBS, ["n=7", "precision=bf16"], ["pytorch.batch_size=2"], ["model=tiny-llama", "seed=3"]]:
            try:
                full = loader.load_sweep_config(master, overrides)
            except Exception:
                continue
            with open_dict(full):
                del full["hydra"]
            assert composer.resolved(overrides) == OmegaConf.to_container(full, resolve=True, enum_to_str=True)
            assert to_typed(ExperimentConfig, composer.resolved(overrides)) == OmegaConf.to_object(full), overrides
            checked += 1
        assert checked >= 10
