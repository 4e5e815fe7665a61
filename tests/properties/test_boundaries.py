"""Boundaries and known numbers that earlier tests let slip: each test here fails on a plausible one-line
mistake (a flipped comparison, `round` for `floor`, a count off by the skipped configs, a missing fsync)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from llem import io
from llem.config.schema import StudyConfig
from llem.measure import stats
from llem.results.compare import compare, log_ratio_ci
from llem.study.gaps import Gaps
from llem.study.hashing import config_hash
from llem.study.plan import Candidate, build_plan


def cand(name: str, problems: list[str] | None = None) -> Candidate:
    return Candidate([f"x={name}"], config_hash({"name": name}), problems or [])


def plan_of(cands: list[Candidate], **study: object):
    return build_plan(cands, StudyConfig(**study), Gaps(0.0, 0.0), "test", {})  # type: ignore[arg-type]


def test_plan_counts_with_skipped_configs_and_cycles() -> None:
    plan = plan_of([cand("a"), cand("b", ["bad b"]), cand("c"), cand("d", ["bad d"]), cand("e")], n_cycles=3)
    assert plan.counts() == {"configs": 5, "valid_configs": 3, "skipped_configs": 2, "cycles": 3, "jobs": 9,
                             "skipped_jobs": 6, "already_completed": 0, "to_launch": 9}
    assert len(plan.to_launch) == 9 and [j.index for j in plan.to_launch] == list(range(9))  # valid × cycles
    assert "3 configs × 3 cycles = 9 jobs" in plan.render()


@pytest.mark.parametrize(("n_bad", "n_all", "warns"), [(2, 4, False), (3, 5, True), (1, 2, False), (2, 3, True)])
def test_skip_warning_only_above_half(n_bad: int, n_all: int, warns: bool) -> None:
    cands = [cand(f"bad{i}", [f"bad {i}"]) for i in range(n_bad)] + [cand(f"ok{i}") for i in range(n_all - n_bad)]
    plan = plan_of(cands)
    assert bool(plan.warnings) is warns, plan.warnings  # exactly half is not "more than half"


def test_config_hash_ignores_the_unused_backends_section_but_not_the_used_one() -> None:
    base = {"backend": "pytorch", "n": 4, "pytorch": {"batch_size": 1}, "vllm": {"max_num_seqs": 8},
            "openai": None, "study": {"n_cycles": 1}}
    other_vllm = {**base, "vllm": {"max_num_seqs": 64}}
    other_pt = {**base, "pytorch": {"batch_size": 2}}
    assert config_hash(base) == config_hash(other_vllm)
    assert config_hash(base) != config_hash(other_pt)
    as_vllm = {**base, "backend": "vllm"}
    assert config_hash(as_vllm) != config_hash({**as_vllm, "vllm": {"max_num_seqs": 64}})
    assert config_hash(as_vllm) == config_hash({**as_vllm, "pytorch": {"batch_size": 7}})


def test_welch_df_is_rounded_down_for_the_t_value() -> None:
    a, b = [1.0, 1.1, 1.3, 0.9], [2.0, 2.6, 1.5, 3.1, 2.2, 1.9]
    r = log_ratio_ci(a, b)
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    va, vb = stats.std(la) ** 2 / 4, stats.std(lb) ** 2 / 6
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 5)
    assert df % 1 > 0.5, "pick data whose df rounds up, so round() and floor() differ"
    se = math.sqrt(va + vb)
    d = stats.mean(lb) - stats.mean(la)
    t_floor = stats.t_critical_95(math.floor(df))
    assert r["df"] == pytest.approx(df)
    assert r["ci95_low"] == pytest.approx(math.exp(d - t_floor * se), rel=1e-12)
    assert r["ci95_high"] == pytest.approx(math.exp(d + t_floor * se), rel=1e-12)
    assert r["ci95_high"] != pytest.approx(math.exp(d + stats.t_critical_95(round(df)) * se), rel=1e-6)


def _jobs(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for h, vals in values.items():
        rows += [{"config_hash": h, "status": "completed", "backend": "pytorch", "override.pytorch.batch_size": h,
                  "throughput.output_tok_s": v} for v in vals]
    return pd.DataFrame(rows)


def test_compare_significant_only_when_the_ci_excludes_one() -> None:
    a = _jobs({"h1": [100.0, 101.0, 99.0], "h2": [100.0, 120.0, 80.0]})
    b = _jobs({"h1": [150.0, 151.0, 149.0], "h2": [101.0, 121.0, 81.0]})
    table, _ = compare(a, b, metrics=("throughput.output_tok_s",))
    sig = dict(zip(table["config_hash_a"], table["significant"]))
    assert sig == {"h1": True, "h2": False}
    slower = _jobs({"h1": [50.0, 51.0, 49.0], "h2": [100.0, 120.0, 80.0]})
    table, _ = compare(a, slower, metrics=("throughput.output_tok_s",))
    assert dict(zip(table["config_hash_a"], table["significant"]))["h1"] is True  # a CI wholly below 1 too


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "sub" / "result.json"
    io.atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert len(synced) == 2, synced
    assert Path(synced[0]).parent == target.parent and Path(synced[0]).name.endswith(".tmp")  # data before rename
    assert synced[1] == str(target.parent)  # then the folder, so the rename survives a crash
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
