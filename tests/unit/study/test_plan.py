"""The pre-flight plan (pure): skipping, indices, hashes, estimates, caps, resume bookkeeping."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llem.config.schema import StudyConfig
from llem.study.estimate import config_estimates, human_seconds, load_history, wall_time
from llem.study.gaps import Gaps, resolve_gaps
from llem.study.hashing import config_hash, design_hash
from llem.study.plan import (
    Candidate,
    StudyError,
    assign_indices,
    build_plan,
    check_startable,
    study_job_overrides,
)
from llem.study.resume import (
    check_design,
    check_fresh_folder,
    completed_keys,
    contiguous_blocks,
    previous_indices,
    saved_design,
)

NO_GAPS = Gaps(0.0, 0.0)


def cand(name: str, problems: list[str] | None = None, chash: str | None = "auto") -> Candidate:
    h = config_hash({"name": name}) if chash == "auto" else chash
    return Candidate([f"x={name}"], h, problems or [])


def plan_of(cands: list[Candidate], history: dict[str, list[float]] | None = None, gaps: Gaps = NO_GAPS,
            **study: object):
    return build_plan(cands, StudyConfig(**study), gaps, "test", history or {})  # type: ignore[arg-type]


def test_jobs_are_configs_times_cycles_with_the_contract_overrides() -> None:
    plan = plan_of([cand("a"), cand("b")], n_cycles=3, order="interleaved")
    assert [(j.index, j.config, j.cycle) for j in plan.jobs] == [
        (0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1), (4, 0, 2), (5, 1, 2)]
    j = plan.jobs[3]
    assert j.overrides == ["x=b", f"++hydra.job.env_set.LLEM_STUDY_JOB='1:{j.config_hash}:{plan.study_design_hash}:3'"]
    assert plan.counts() == {"configs": 2, "valid_configs": 2, "skipped_configs": 0, "cycles": 3, "jobs": 6,
                             "skipped_jobs": 0, "already_completed": 0, "to_launch": 6}


def test_invalid_configs_are_skipped_with_their_reason_and_follow_the_valid_jobs() -> None:
    plan = plan_of([cand("a"), cand("bad", ["pytorch.num_beams=2 is invalid: allowed 1"]), cand("c")], n_cycles=2)
    assert [c.valid for c in plan.configs] == [True, False, True]
    launch = plan.to_launch
    assert [j.index for j in launch] == [0, 1, 2, 3] and {j.config for j in launch} == {0, 2}
    skipped = [j for j in plan.jobs if j.status == "skipped"]
    assert [j.index for j in skipped] == [4, 5]
    assert all(j.reason == "pytorch.num_beams=2 is invalid: allowed 1" for j in skipped)
    assert [e["status"] for e in plan.manifest_jobs()] == ["planned"] * 4 + ["skipped"] * 2
    assert plan.warnings == []  # 1 of 3 is not "more than half"
    assert "reason: pytorch.num_beams=2 is invalid" in plan.render()


def test_more_than_half_skipped_warns_and_all_invalid_refuses() -> None:
    plan = plan_of([cand("a"), cand("b", ["bad b"]), cand("c", ["bad c"])])
    assert "2 of 3 configs (67%) are invalid" in plan.warnings[0]
    check_startable(plan, StudyConfig())  # still starts
    none_valid = plan_of([cand("b", ["bad b"]), cand("c", ["bad c"]), cand("d", ["bad c"])])
    with pytest.raises(StudyError, match=r"all 3 configs of the study are invalid; nothing was run:\n  2× bad c"):
        check_startable(none_valid, StudyConfig())


def test_uncomposable_configs_get_a_stable_identity() -> None:
    a = plan_of([cand("a"), cand("bad", ["cannot compose: ..."], chash=None)])
    b = plan_of([cand("a"), cand("bad", ["cannot compose: ..."], chash=None)])
    assert a.configs[1].config_hash == b.configs[1].config_hash and a.study_design_hash == b.study_design_hash


def test_max_jobs_caps_the_study_unless_allowed() -> None:
    plan = plan_of([cand("a"), cand("b")], n_cycles=3, max_jobs=5)
    with pytest.raises(StudyError, match="launch 6 jobs, above study.max_jobs=5.*allow_over_max_jobs=true"):
        check_startable(plan, StudyConfig(n_cycles=3, max_jobs=5))
    check_startable(plan, StudyConfig(n_cycles=3, max_jobs=5, allow_over_max_jobs=True))


def test_identical_configs_are_planned_once() -> None:
    same = config_hash({"name": "a"})
    plan = plan_of([cand("a"), Candidate(["x=a", "pytorch.batch_size=1"], same), cand("b")])
    assert len(plan.configs) == 2 and "same config as c0" in plan.notes[0]


def test_design_hash_ignores_cycles_order_gaps_and_seed_but_not_configs() -> None:
    cands = [cand("a"), cand("b"), cand("c")]
    base = plan_of(cands).study_design_hash
    assert base == design_hash(c.config_hash for c in cands)  # type: ignore[misc]
    assert plan_of(cands, n_cycles=5, order="shuffled", shuffle_seed=3, gaps=Gaps(60, 300)).study_design_hash == base
    assert plan_of(list(reversed(cands))).study_design_hash == base
    assert plan_of([cand("a"), cand("b"), cand("d")]).study_design_hash != base
    assert plan_of(cands[:2]).study_design_hash != base


def test_shuffled_order_is_seeded_by_the_design_hash_when_no_seed_is_given() -> None:
    cands = [cand(str(i)) for i in range(6)]
    a = plan_of(cands, n_cycles=3, order="shuffled")
    assert a.settings["seed_used"] == int(a.study_design_hash[:8], 16)
    assert [j.config for j in a.jobs] == [j.config for j in plan_of(cands, n_cycles=3, order="shuffled").jobs]
    assert plan_of(cands, n_cycles=3, order="shuffled", shuffle_seed=1).settings["seed_used"] == 1


def test_digit_only_hashes_stay_strings_in_overrides() -> None:
    assert study_job_overrides(0, 1, "0123456789012345", "1e23456789012345") == [
        "++hydra.job.env_set.LLEM_STUDY_JOB='1:0123456789012345:1e23456789012345:0'"]


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=5),
                                                                 st.booleans(), st.none()), max_size=8),
       st.randoms())
def test_config_hash_is_stable_under_key_order(d: dict, rnd: random.Random) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    nested = {"pytorch": dict(items), "backend": "pytorch", "n": 4}
    reordered = {"n": 4, "backend": "pytorch", "pytorch": dict(reversed(items))}
    assert config_hash(nested) == config_hash(reordered)


@given(st.lists(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16), max_size=10), st.randoms())
def test_design_hash_is_stable_under_order(hashes: list[str], rnd: random.Random) -> None:
    shuffled = list(hashes)
    rnd.shuffle(shuffled)
    assert design_hash(hashes) == design_hash(shuffled)


# -- estimates ---------------------------------------------------------------------------------------

def test_estimates_use_history_then_the_study_median_then_the_default() -> None:
    est = config_estimates(["h1", "h2", "h3"], {"h1": [10.0, 30.0, 20.0], "h2": [40.0]}, default_s=60)
    assert (est["h1"].seconds, est["h1"].source) == (20.0, "history (n=3)")
    assert (est["h3"].seconds, est["h3"].source) == (30.0, "study median")
    assert config_estimates(["h9"], {}, 60)["h9"].source == "default"


def test_wall_time_adds_the_gaps_the_launcher_waits() -> None:
    est = config_estimates(["a", "b"], {"a": [10.0], "b": [20.0]}, 60)
    jobs = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    w = wall_time(jobs, est, Gaps(config_gap_s=5, cycle_gap_s=100))
    assert (w.jobs_s, w.gaps_s, w.total_s) == (60.0, 5 + 100 + 5, 170.0)


def test_plan_estimate_and_per_job_gaps() -> None:
    a, b = cand("a"), cand("b")
    plan = plan_of([a, b], history={a.config_hash: [8.0]}, gaps=Gaps(5, 100), n_cycles=2,  # type: ignore[dict-item]
                   job_estimate_s=99)
    assert [j.gap_before_s for j in plan.to_launch] == [0.0, 5.0, 100.0, 5.0]
    assert plan.estimate.total_s == pytest.approx(4 * 8.0 + 110)  # b has no history: the study median
    assert "1 of 2 configs estimated from earlier results" in plan.estimate_note


def test_sequential_order_waits_the_cycle_gap_between_repeats_and_the_config_gap_between_configs() -> None:
    plan = plan_of([cand("a"), cand("b")], gaps=Gaps(5, 100), n_cycles=3, order="sequential")
    assert [(j.config, j.cycle, j.gap_before_s) for j in plan.to_launch] == [
        (0, 0, 0.0), (0, 1, 100.0), (0, 2, 100.0), (1, 0, 5.0), (1, 1, 100.0), (1, 2, 100.0)]
    assert plan.estimate.gaps_s == 405.0


def test_gaps_default_to_gpu_values_on_gpu_hosts_none_on_cpu_and_switch_off() -> None:
    assert resolve_gaps(StudyConfig(gaps="fixed"), gpu_host=True) == Gaps(60.0, 300.0)
    assert resolve_gaps(StudyConfig(), gpu_host=True).adaptive  # the default on GPU hosts (tests/unit/study/test_gaps.py)
    assert resolve_gaps(StudyConfig(), gpu_host=False) == Gaps(0.0, 0.0)
    assert resolve_gaps(StudyConfig(config_gap_seconds=2, cycle_gap_seconds=7), gpu_host=False) == Gaps(2.0, 7.0)
    assert resolve_gaps(StudyConfig(gaps=False, config_gap_seconds=2), gpu_host=True) == Gaps(0.0, 0.0)


def test_load_history_reads_manifest_durations_and_results(tmp_path: Path) -> None:
    study = tmp_path / "2026-01-01" / "10-00-00"
    for i, (h, status, job_s) in enumerate([("aa", "completed", 3.0), ("aa", "failed", 9.0), ("bb", "completed", 4.0)]):
        (study / str(i)).mkdir(parents=True)
        (study / str(i) / "result.json").write_text(json.dumps(
            {"status": status, "identity": {"config_hash": h}, "timing": {"job_s": job_s}}))
    (study / "manifest.json").write_text(json.dumps({"jobs": [
        {"index": 2, "config_hash": "bb", "status": "completed", "duration_s": 7.5, "job_dir": str(study / "2")}]}))
    assert load_history(tmp_path) == {"aa": [3.0], "bb": [7.5]}  # the launcher's wall time wins over job_s
    assert load_history(tmp_path / "missing") == {}


def test_human_seconds() -> None:
    assert [human_seconds(s) for s in (4.24, 95, 3725)] == ["4.2 s", "1 min 35 s", "1 h 02 min"]


# -- resume ------------------------------------------------------------------------------------------

def test_resume_keeps_indices_and_skips_completed_jobs() -> None:
    cands = [cand("a"), cand("b")]
    first = plan_of(cands, n_cycles=2)
    saved = json.loads(json.dumps(first.as_dict()))
    previous = previous_indices(saved)
    done = completed_keys([{"status": "completed", "config_hash": first.jobs[1].config_hash, "cycle": 0,
                            "study_design_hash": first.study_design_hash},
                           {"status": "failed", "config_hash": first.jobs[2].config_hash, "cycle": 1},
                           {"status": "completed", "config_hash": first.jobs[3].config_hash, "cycle": 1,
                            "study_design_hash": "another000000000"}], first.study_design_hash)
    again = build_plan(cands, StudyConfig(n_cycles=3), NO_GAPS, "", {}, previous=previous, completed=done)
    assert again.study_design_hash == first.study_design_hash
    old = {(j.config_hash, j.cycle): j.index for j in first.jobs}
    assert all(old[j.key] == j.index for j in again.jobs if j.key in old)  # folders stay where they are
    assert sorted(j.index for j in again.jobs if j.cycle == 2) == [4, 5]  # a new cycle follows
    assert [j.index for j in again.to_launch] == [0, 2, 3, 4, 5]
    assert contiguous_blocks([j.index for j in again.to_launch]) == [[0], [2, 3, 4, 5]]


def test_without_a_plan_file_the_manifest_and_job_folders_fix_indices_and_design() -> None:
    m = {"study_design_hash": "d1", "jobs": [{"index": 0, "config_hash": "aa", "cycle": 0}]}
    seen = [{"job_dir": "/s/3", "config_hash": "bb", "cycle": 1, "study_design_hash": "d2"},
            {"job_dir": "/s/0", "config_hash": "aa", "cycle": 0, "study_design_hash": "d1"}]
    assert previous_indices(None, m, seen) == {("aa", 0): 0, ("bb", 1): 3}
    assert saved_design(None, m, seen) == "d1"
    assert saved_design(None, None, seen) == "d2"  # a folder of results still has a design
    assert saved_design(None, None, []) is None


def test_assign_indices() -> None:
    assert assign_indices([("a", 0), ("b", 0), ("c", 0)], {("b", 0): 7}) == [8, 7, 9]


def test_resume_refuses_another_design_naming_both_hashes() -> None:
    check_design(None, "abc", "dir")
    check_design("abc", "abc", "dir")
    with pytest.raises(StudyError, match="holds study design 1111111111111111, but this command plans design 2222"):
        check_design("1111111111111111", "2222222222222222", "multirun/x")


def test_a_started_study_folder_is_only_reused_with_resume() -> None:
    check_fresh_folder(False, False, "d")
    check_fresh_folder(True, True, "d")
    with pytest.raises(StudyError, match="already holds a study.*study.resume=true"):
        check_fresh_folder(True, False, "d")
