"""Is a job folder whole? Its result.json, requests.jsonl and timeseries.parquet, checked (pure).

A torn file (truncated, empty, `null` or another JSON type, not UTF-8) means the job did not
complete: resume runs it again into its own folder after setting the torn files aside
(`<name>.torn-<time>`, nothing is deleted), and the report lists them. A torn result.json says
nothing about which job it was; the job's `.hydra/` files (written by Hydra before the job ran)
still do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llem.io import TornFile, read_json_object, set_aside
from llem.result import REQUESTS_FILE, RESULT_FILE, TIMESERIES_FILE

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"
PARQUET_MAGIC = b"PAR1"


@dataclass
class JobFiles:
    job_dir: Path
    result: Optional[dict[str, Any]] = None  # None: no result.json, or a torn one
    torn: dict[str, str] = field(default_factory=dict)  # file name → why it cannot be read

    @property
    def has_result(self) -> bool:
        return self.result is not None or RESULT_FILE in self.torn


def requests_problem(path: Path, expected_rows: Optional[int]) -> Optional[str]:
    """Why requests.jsonl is torn, or None: every line a JSON object, the last one ended, one line
    per request of the result (a cut exactly between lines leaves fewer)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not raw.strip():
        return "empty"
    if not raw.endswith(b"\n"):
        return "truncated (the last line is not ended)"
    try:
        lines = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        return f"not UTF-8 ({e.reason} at byte {e.start})"
    except ValueError as e:
        return f"a line is not valid JSON: {e}"
    if not all(isinstance(x, dict) for x in lines):
        return "a line is not a JSON object"
    if isinstance(expected_rows, int) and not isinstance(expected_rows, bool) and len(lines) != expected_rows:
        return f"{len(lines)} request rows, the result says {expected_rows} requests (truncated?)"
    return None


def parquet_problem(path: Path) -> Optional[str]:
    """Why timeseries.parquet is torn, or None: a Parquet file starts and ends with PAR1, and the
    footer length before the final magic fits in the file (no pyarrow needed)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if size < 12:
                return "truncated (too short for Parquet)"
            f.seek(size - 8)
            tail = f.read(8)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if head != PARQUET_MAGIC or tail[4:] != PARQUET_MAGIC:
        return "not a whole Parquet file (truncated?)"
    footer = int.from_bytes(tail[:4], "little")
    if footer <= 0 or footer > size - 12:
        return "Parquet footer length does not fit (truncated?)"
    return None


def check(job_dir: str | os.PathLike[str]) -> JobFiles:
    """Read result.json and check the side files it lists (identity.files)."""
    job_dir = Path(job_dir)
    out = JobFiles(job_dir)
    try:
        out.result = read_json_object(job_dir / RESULT_FILE)
    except TornFile as e:
        out.torn[RESULT_FILE] = e.why
        return out
    if out.result is None:
        return out
    ident = out.result.get("identity")
    listed = ident.get("files") if isinstance(ident, dict) else None
    listed = listed if isinstance(listed, list) else []
    workload = out.result.get("workload")
    prompts = workload.get("prompts") if isinstance(workload, dict) else None
    if REQUESTS_FILE in listed or (job_dir / REQUESTS_FILE).exists():
        why = requests_problem(job_dir / REQUESTS_FILE, prompts if out.result.get("status") == "completed" else None)
        if why:
            out.torn[REQUESTS_FILE] = why
    if TIMESERIES_FILE in listed or (job_dir / TIMESERIES_FILE).exists():
        why = parquet_problem(job_dir / TIMESERIES_FILE)
        if why:
            out.torn[TIMESERIES_FILE] = why
    return out


def identity_from_overrides(job_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config_hash, cycle, study_design_hash, job_index of a job from the overrides Hydra saved before it
    ran ({} if none): the sweeper's tag in `.hydra/hydra.yaml` (hydra.overrides.hydra), else
    `study_job.*` lines in `.hydra/overrides.yaml` (folders of older llem versions)."""
    import yaml

    from llem.study.jobtag import study_job_of

    lines: list[str] = []
    for name, path in ((HYDRA_FILE, ("hydra", "overrides", "hydra")), (OVERRIDES_FILE, ())):
        try:
            node: Any = yaml.safe_load((Path(job_dir) / name).read_text(encoding="utf-8"))
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            lines += [str(x) for x in node or () if isinstance(x, str)]
        except (OSError, ValueError, yaml.YAMLError, TypeError):
            continue
    try:
        found = study_job_of(lines)
    except ValueError:  # a malformed tag names nothing
        return {}
    if "index" in found:
        found["job_index"] = found.pop("index")
    return {k: v for k, v in found.items() if v is not None}


def set_aside_torn(job_dir: str | os.PathLike[str], stamp: Optional[str] = None) -> list[Path]:
    """Before a job runs again in its folder: rename its torn files (and the result.json they
    belong to) to `<name>.torn-<stamp>`. Returns the new paths; nothing torn, nothing moved."""
    files = check(job_dir)
    if not files.torn:
        return []
    import datetime as _dt

    stamp = stamp or _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    names = set(files.torn) | {RESULT_FILE}
    moved = [set_aside(Path(job_dir) / name, stamp) for name in sorted(names)]
    return [p for p in moved if p is not None]
