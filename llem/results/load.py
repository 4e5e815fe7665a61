"""Results as data: every `result.json` under a folder into one tidy pandas DataFrame.

    import llem.results
    df = llem.results.load("multirun/2026-11-23/01-26-07")   # a run, a sweep, or a tree of them
    df.groupby("override.pytorch.batch_size")["throughput.output_tok_s"].mean()

One row per job. Columns are the result sections flattened with dots, units kept in the names
(`throughput.output_tok_s`, `energy.j_per_output_token`, `latency.ttft_s.p50`); every override is a
column `override.<key>`; `status` and `error.*` say what went wrong. Files are read with plain
`json` and the frame is built once from a list of flat dicts (10,000 results in about a second).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from llem.io import TornFile
from llem.result import REQUESTS_FILE, RESULT_FILE, SCHEMA_VERSION, TIMESERIES_FILE
from llem.study.jobfiles import parquet_problem, requests_problem

SCHEMA_MAJOR = SCHEMA_VERSION.split(".")[0]
OVERRIDE_PREFIX = "override."
# Identity columns first, in this order; then overrides, then errors, then the flattened sections.
ID_COLUMNS = ("job_dir", "sweep_dir", "status", "config_hash", "cycle", "study_design_hash", "job_index",
              "backend", "model", "model_revision", "model_source", "model_path", "model_commit", "dataset", "precision", "started_at", "finished_at",
              "schema_version", "llem_version")
ERROR_KEYS = ("type", "message", "reason", "exit_code", "exit_signal")
SECTIONS = ("workload", "timing", "throughput", "latency", "energy", "serving", "flops", "memory", "model",
            "environment", "gpu_settings")
SKIP_KEYS = {"timing": ("warmup_latencies_s",), "energy": ("devices", "warnings")}
# Overrides that are bookkeeping already present as identity columns, not experiment settings.
BOOKKEEPING_OVERRIDES = ("study_job.", "hydra.", "study.")
# Names of numeric figures (unit or statistic at the end), so all-missing columns still read as float.
NUMERIC_NAME = re.compile(r"(_s|_j|_w|_c|_bytes|_token|_request|_per_j|_queries|_flop|_tokens|_hz)$"
                          r"|\.(n|mean|p\d+|min|max)$")
SWEEP_MARKERS = ("multirun.yaml", "manifest.json", "plan.json")

# The metrics people compare; aggregation, summaries and reports use these by default.
THROUGHPUT = "throughput.output_tok_s"
J_PER_TOKEN = "energy.j_per_output_token"
TTFT_P50 = "latency.ttft_s.p50"
ITL_P50 = "latency.itl_request_mean_s.p50"
E2E_P50 = "latency.e2e_s.p50"
KEY_METRICS = (THROUGHPUT, J_PER_TOKEN, TTFT_P50, ITL_P50)

__all__ = ["load", "find_result_files", "flatten_result", "override_columns", "varying_overrides",
           "config_label", "load_requests", "load_timeseries", "KEY_METRICS"]


def _natural_key(path: str) -> list[Any]:
    """Job folders 2 < 10, as people count them."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def find_result_files(path: str | os.PathLike[str]) -> list[str]:
    """Every result.json at or below `path` (hidden folders such as .hydra are not entered)."""
    root = Path(path)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise FileNotFoundError(f"llem.results.load: {str(root)!r} is neither a result.json nor a folder")
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if RESULT_FILE in files:
            found.append(os.path.join(folder, RESULT_FILE))
    return sorted(found, key=_natural_key)


def parse_override(text: str) -> tuple[str, Any]:
    """`pytorch.batch_size=8` → ("pytorch.batch_size", 8); `+x=a` → ("x", "a"); `~x` → ("x", None)."""
    key, sep, raw = text.partition("=")
    key = key.lstrip("+~")
    if not sep:
        return key, None
    return key, _parse_value(raw)


def _parse_value(raw: str) -> Any:
    low = raw.strip().lower()
    if low in ("null", "none", ""):
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        pass
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return _HYDRA_ESCAPE.sub(r"\1", raw)  # Hydra's sweeps escape `:` `=` `,` ...: show the plain value (URLs)


_HYDRA_ESCAPE = re.compile(r"\\([\\()\[\]{}:=, \t])")  # hydra._internal.grammar.utils escape_special_characters


def _flatten(prefix: str, block: dict[str, Any], out: dict[str, Any]) -> None:
    """Nested dicts → dotted keys; lists of strings joined; other lists stay in result.json (hot loop)."""
    for key, value in block.items():
        name = f"{prefix}.{key}"
        kind = type(value)
        if kind is dict:
            _flatten(name, value, out)
        elif kind is list:
            if value and all(type(v) is str for v in value):
                out[name] = "; ".join(value)
        else:
            out[name] = value


def flatten_result(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    """One result.json → one flat row (see module doc for the column names)."""
    ident = result.get("identity") or {}
    row: dict[str, Any] = {
        "job_dir": job_dir,
        "status": result.get("status"),
        "config_hash": ident.get("config_hash"),
        "cycle": ident.get("cycle"),
        "study_design_hash": ident.get("study_design_hash"),
        "job_index": ident.get("job_index"),
        "backend": ident.get("backend"),
        "model": ident.get("model"),
        "model_revision": ident.get("model_revision"),
        "model_source": ident.get("model_source"),
        "model_path": ident.get("model_path"),
        "model_commit": ident.get("model_commit"),
        "dataset": ident.get("dataset"),
        "precision": ident.get("precision"),
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),
        "schema_version": result.get("schema_version"),
        "llem_version": result.get("llem_version"),
    }
    for text in ident.get("overrides") or ():
        key, value = parse_override(str(text))
        if not key.startswith(BOOKKEEPING_OVERRIDES):
            row[OVERRIDE_PREFIX + key] = value
    error = result.get("error")
    if isinstance(error, dict):
        for key in ERROR_KEYS:
            if key in error:
                row[f"error.{key}"] = error[key]
    for section in SECTIONS:
        block = result.get(section)
        if isinstance(block, dict) and block:
            skip = SKIP_KEYS.get(section)
            if skip:
                block = {k: v for k, v in block.items() if k not in skip}
            _flatten(section, block, row)
    devices = (result.get("energy") or {}).get("devices") or ()
    for dev in devices:
        if isinstance(dev, dict) and "device" in dev:
            row[f"energy.device.{dev['device']}.energy_j"] = dev.get("energy_j")
    warns = result.get("warnings") or []
    row["n_warnings"] = len(warns)
    row["warnings"] = "; ".join(map(str, warns)) if warns else None
    return row


def _unreadable_row(job_dir: str, message: str) -> dict[str, Any]:
    return {"job_dir": job_dir, "status": "failed", "error.type": "CorruptResult", "error.message": message}


def _rows(files: Iterable[str]) -> Iterator[dict[str, Any]]:
    skipped: list[str] = []
    sweep_of: dict[str, str | None] = {}
    for path in files:
        job_dir = os.path.dirname(path)
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            yield _unreadable_row(job_dir, f"unreadable {path}: {e}")
            continue
        if not isinstance(result, dict):
            yield _unreadable_row(job_dir, f"{path} holds no JSON object")
            continue
        version = str(result.get("schema_version") or "")
        if version.split(".")[0] != SCHEMA_MAJOR:
            skipped.append(f"{path} (schema {version or 'missing'})")
            continue
        row = flatten_result(result, job_dir)
        parent = os.path.dirname(job_dir)
        if parent not in sweep_of:
            sweep_of[parent] = parent if any(os.path.isfile(os.path.join(parent, m)) for m in SWEEP_MARKERS) \
                else None
        row["sweep_dir"] = sweep_of[parent]
        yield row
    if skipped:
        warnings.warn(f"llem.results: skipped {len(skipped)} result file(s) of another schema major "
                      f"version (this llem reads {SCHEMA_MAJOR}.x): " + ", ".join(skipped[:5]), stacklevel=3)


def _tidy_override(series: pd.Series, kinds: set[type]) -> pd.Series:
    """One type per override column (`kinds`: the Python types parsed from the override texts):
    integers stay integers where some jobs lack the key (nullable Int64: `pytorch.batch_size` of a
    vLLM job), a column mixing kinds (numbers and words) becomes text."""
    if kinds == {int}:
        return series.astype("Int64")
    if kinds <= {bool} or kinds <= {int, float} or kinds <= {str}:
        return series
    return series.map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))


def _tidy_metric(name: str, series: pd.Series) -> pd.Series:
    """Numbers as float even where some (or all) jobs have none: `energy.j_per_output_token` of a
    CPU-only study is a NaN column, not an object column of Nones."""
    values = series.dropna()
    if values.empty:
        return series.astype("float64") if NUMERIC_NAME.search(name) else series
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return series.astype("float64")
    return series


def load(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every job under `path` (a run folder, a sweep folder, a tree, or one result.json) as a DataFrame.

    Unreadable files give a row with status `failed` and `error.type` = CorruptResult; files of
    another schema major version are skipped with a warning. An empty folder gives an empty frame
    with the identity columns.
    """
    rows = list(_rows(find_result_files(path)))
    if not rows:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    kinds: dict[str, set[type]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(OVERRIDE_PREFIX) and value is not None:
                kinds.setdefault(key, set()).add(type(value))
    df = pd.DataFrame.from_records(rows)
    overrides = sorted(c for c in df.columns if c.startswith(OVERRIDE_PREFIX))
    errors = [f"error.{k}" for k in ERROR_KEYS if f"error.{k}" in df.columns]
    for col in ID_COLUMNS:
        if col not in df.columns:
            df[col] = None
    front = set(ID_COLUMNS) | set(overrides) | set(errors)
    rest = [c for c in df.columns if c not in front]
    df = df[list(ID_COLUMNS) + overrides + errors + rest]
    for col in overrides:
        df[col] = _tidy_override(df[col], kinds.get(col, set()))
    for col in ("cycle", "job_index"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in rest:
        if df[col].dtype == object:
            df[col] = _tidy_metric(col, df[col])
    return df.reset_index(drop=True)


def override_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(OVERRIDE_PREFIX)]


def varying_overrides(df: pd.DataFrame) -> list[str]:
    """Override columns whose value differs between rows (missing counts as a value): what a sweep swept."""
    out = []
    for col in override_columns(df):
        if df[col].astype("string").fillna("<unset>").nunique() > 1:
            out.append(col)
    return out


def config_label(row: pd.Series | dict[str, Any], columns: Iterable[str]) -> str:
    """`pytorch.batch_size=2 precision=fp16` from the given override columns of one row."""
    parts = []
    for col in columns:
        value = row.get(col)
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            continue
        parts.append(f"{col[len(OVERRIDE_PREFIX):]}={value}")
    return " ".join(parts)


def load_requests(job_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A job's requests.jsonl (one row per request: ttft_s, itl_s, e2e_s, tokens), None if absent.
    A torn file (truncated, empty, not UTF-8, a line that is not a JSON object) raises TornFile."""
    path = Path(job_dir) / REQUESTS_FILE
    if not path.is_file():
        return None
    why = requests_problem(path, None)
    if why:
        raise TornFile(path, why)
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return pd.DataFrame.from_records(records)


def load_timeseries(job_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A job's timeseries.parquet (one row per sample per device), None if absent; TornFile if torn."""
    path = Path(job_dir) / TIMESERIES_FILE
    if not path.is_file():
        return None
    why = parquet_problem(path)
    if why:
        raise TornFile(path, why)
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow's errors for a damaged file are of several types
        raise TornFile(path, f"unreadable Parquet: {type(e).__name__}: {e}") from None
