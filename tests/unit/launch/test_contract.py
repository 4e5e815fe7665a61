"""The contract between a study and llem's process supervisor (llem.launch.contract), and llem's side
of it (llem.study.hooks): fast unit tests, no Hydra compose, no job process."""

from __future__ import annotations

from pathlib import Path

from llem.launch.contract import Ledger, NoGaps, StudyHooks
from llem.study import lock, manifest
from llem.study.gaps import Gaps
from llem.study.hooks import LlemStudyHooks, ManifestLedger, for_config, is_llem_app
from llem.study.jobtag import tag_override


def test_plain_hooks_record_nothing_and_wait_nothing(tmp_path: Path) -> None:
    hooks = StudyHooks()
    assert not hooks.study and hooks.preload == () and hooks.job_setup is None and not hooks.searching
    assert hooks.gaps.before(0, 1) == 0.0 and not hooks.gaps.adaptive
    ledger = hooks.ledger(tmp_path)
    assert type(ledger) is Ledger and ledger.job_env() == {}
    with ledger.hold():
        ledger.mark(0, "running")
        ledger.study_status("failed")
    assert list(tmp_path.iterdir()) == []  # nothing of llem's in another app's folder
    assert hooks.identity(4, ["a=1"], None)["index"] == 4
    assert hooks.label(["a=1", "b=2"]) == "a=1 b=2" and hooks.label([]) == "(defaults)"


def test_gaps_pace_as_the_plan_counts_them() -> None:
    g = Gaps(5.0, 30.0)
    assert g.before(None, 0) == 0.0  # the first job
    assert g.before(0, 0) == 5.0  # next config, same cycle
    assert g.before(0, 1) == 30.0  # a new cycle
    assert g.before(1, 0) == 5.0  # sequential order moving on to the next config
    assert g.starts_cycle(0, 1) and not g.starts_cycle(1, 1) and not g.starts_cycle(None, 0)
    assert NoGaps().before(0, 1) == 0.0 and NoGaps().starts_cycle(0, 1)


def test_llem_hooks_read_the_sweepers_tag_and_label_without_it() -> None:
    hooks = LlemStudyHooks(config=None, gaps=Gaps(0, 0), by_sweeper=True)
    tag = tag_override(7, 2, "a" * 16, "b" * 16)
    assert hooks.identity(3, ["n=2", tag], None) == {"index": 7, "cycle": 2, "config_hash": "a" * 16,
                                                     "study_design_hash": "b" * 16}
    assert hooks.identity(3, ["n=2"], None)["index"] == 3  # no tag (another sweeper): the job number
    assert hooks.label(["n=2", tag, "study.gaps=false", "seed=1"]) == "n=2 seed=1"
    assert hooks.label([tag]) == "(defaults)"
    assert hooks.study and hooks.preload is None and hooks.job_setup is lock.hold_as_job


def test_the_manifest_ledger_writes_the_study_folder(tmp_path: Path) -> None:
    ledger = ManifestLedger(tmp_path)
    assert ledger.job_env() == {lock.JOBS_LOCK_ENV: str(tmp_path.absolute() / lock.JOBS_LOCK_FILE)}
    ledger.mark(5, "running", pid=1)  # no manifest yet: the entry is made
    ledger.mark(5, "completed")
    ledger.study_status("interrupted", interrupt_signal="SIGINT")
    m = manifest.load(tmp_path)
    assert m is not None and m["status"] == "interrupted"
    assert [(j["index"], j["status"]) for j in m["jobs"]] == [(5, "completed")]
    with ledger.hold(), ledger.hold():  # the folder lock, reentrant within this process
        pass


def test_for_config_picks_llems_study_only_for_llems_app() -> None:
    assert is_llem_app({"study": {}, "study_job": {}}) and not is_llem_app({"study": {}})
    assert isinstance(for_config({"study": {}, "study_job": {}}), LlemStudyHooks)
    assert type(for_config({"db": {}})) is StudyHooks
