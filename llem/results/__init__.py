"""Results as data: `llem.results.load(folder)` → one pandas row per job (code in load.py)."""

from __future__ import annotations

from llem.results.load import (  # noqa: F401
    BOOKKEEPING_OVERRIDES,
    E2E_P50,
    ERROR_KEYS,
    ID_COLUMNS,
    ITL_P50,
    J_PER_TOKEN,
    KEY_METRICS,
    NUMERIC_NAME,
    OVERRIDE_PREFIX,
    SCHEMA_MAJOR,
    SECTIONS,
    SKIP_KEYS,
    SWEEP_MARKERS,
    THROUGHPUT,
    TTFT_P50,
    config_label,
    find_result_files,
    flatten_result,
    load,
    load_requests,
    load_timeseries,
    override_columns,
    parse_override,
    varying_overrides,
)
