"""llem.results.axes: which swept override columns are the rate or batch axis, found by comparing their
values with the result's own fields (no knob names)."""

from __future__ import annotations

import math

import pandas as pd

from llem.results.axes import axis_columns, batch_columns, rate_columns, request_rate


def test_request_rate_reads_the_field_and_inf_where_flagged() -> None:
    jobs = pd.DataFrame({"serving.request_rate": [2.0, None, "x"], "serving.request_rate_inf": [False, True, None]})
    rate = request_rate(jobs).tolist()
    assert rate[0] == 2.0 and rate[1] == math.inf and math.isnan(rate[2])
    assert request_rate(pd.DataFrame({"n": [1, 2]})).isna().all()  # offline jobs: no rate


def test_rate_column_is_the_override_equal_to_the_rate_in_every_job_that_sets_it() -> None:
    jobs = pd.DataFrame({
        "serving.request_rate": [1.0, 4.0, 4.0], "serving.request_rate_inf": [False, False, False],
        "override.scenario.request_rate": ["1", "4", None],  # strings from the command line, one job unset
        "override.n": [1, 4, 4],  # equal to the rate in every job: an axis by its values too
        "override.seed": [1, 2, 4],
    })
    cols = ["override.scenario.request_rate", "override.n", "override.seed", "override.absent"]
    assert rate_columns(jobs, cols) == ["override.scenario.request_rate", "override.n"]
    jobs.loc[2, "override.n"] = 8
    assert rate_columns(jobs, cols) == ["override.scenario.request_rate"]


def test_inf_rate_matches_an_inf_override() -> None:
    jobs = pd.DataFrame({"serving.request_rate": [None, 2.0], "serving.request_rate_inf": [True, False],
                         "override.scenario.request_rate": ["inf", "2"]})
    assert rate_columns(jobs, ["override.scenario.request_rate"]) == ["override.scenario.request_rate"]


def test_batch_column_is_each_backends_own_knob() -> None:
    jobs = pd.DataFrame({"workload.batch_size": [2, 8, 4],
                         "override.pytorch.batch_size": [2, 8, None], "override.vllm.max_num_seqs": [None, None, 4],
                         "override.n": [16, 16, 16]})
    cols = ["override.pytorch.batch_size", "override.vllm.max_num_seqs", "override.n"]
    assert batch_columns(jobs, cols) == ["override.pytorch.batch_size", "override.vllm.max_num_seqs"]
    assert batch_columns(pd.DataFrame({"override.n": [1]}), ["override.n"]) == []


def test_a_column_never_set_where_the_field_is_known_is_no_axis() -> None:
    jobs = pd.DataFrame({"override.x": [None, None], "override.y": ["2", "a"]})
    values = pd.Series([2.0, 3.0])
    assert axis_columns(jobs, ["override.x", "override.y"], values) == []
    assert axis_columns(jobs, ["override.y"], pd.Series([2.0, None])) == ["override.y"]  # "a" where unknown
