"""Which swept overrides are an axis the result already carries as a field, found from the fields.

A serving study sweeping `scenario.request_rate` has the rate in `serving.request_rate`; a batch sweep
has the batch size in `workload.batch_size` (pytorch.batch_size, vllm.max_num_seqs, ... alike). Summaries
and the report plot against those fields and leave such overrides out of the series labels; they find
them here by comparing values, so a backend's knob name is never needed (no override strings).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

RATE_FIELD = "serving.request_rate"
RATE_INF_FIELD = "serving.request_rate_inf"
BATCH_FIELD = "workload.batch_size"


def _same(a: Any, b: Any) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return x == y or (math.isnan(x) and math.isnan(y))


def request_rate(jobs: pd.DataFrame) -> pd.Series:
    """The asked request rate per job from the result (inf where `request_rate_inf`), NaN without serving."""
    rate = pd.to_numeric(jobs[RATE_FIELD], errors="coerce") if RATE_FIELD in jobs else \
        pd.Series(math.nan, index=jobs.index, dtype="float64")
    if RATE_INF_FIELD in jobs:
        rate = rate.mask(jobs[RATE_INF_FIELD].fillna(False).astype(bool), math.inf)
    return rate


def axis_columns(jobs: pd.DataFrame, columns: list[str], values: pd.Series) -> list[str]:
    """Of `columns` (override columns), those whose value equals `values` (a result field) in every job
    where the override is set, and is set in at least one job with the field known."""
    out = []
    for col in columns:
        if col not in jobs:
            continue
        set_rows = jobs[col].notna() & values.notna()
        if set_rows.any() and all(_same(a, b) for a, b in zip(jobs.loc[set_rows, col], values[set_rows])):
            out.append(col)
    return out


def rate_columns(jobs: pd.DataFrame, columns: list[str]) -> list[str]:
    """The override columns that set the request rate (`serving.request_rate`)."""
    return axis_columns(jobs, columns, request_rate(jobs))


def batch_columns(jobs: pd.DataFrame, columns: list[str]) -> list[str]:
    """The override columns that set the batch size (`workload.batch_size`, each backend's own knob)."""
    if BATCH_FIELD not in jobs:
        return []
    return axis_columns(jobs, columns, pd.to_numeric(jobs[BATCH_FIELD], errors="coerce"))
