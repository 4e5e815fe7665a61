"""The cheapest benchmark, run as a user runs it: it must finish and write its figures as JSON.

No timing is asserted (timings belong in the benchmarks themselves); a broken benchmark script is.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.slow
def test_timing_overhead_quick_writes_its_json(tmp_path: Path, llem_cache: Path) -> None:
    out = tmp_path / "timing.json"
    env = {**os.environ, "LLEM_CACHE": str(llem_cache)}
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_timing_overhead.py"), "--quick",
                        "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "timing_overhead" and doc["quick"] is True
    assert {"method", "rows", "data", "skipped", "load_avg", "elapsed_s", "omp_num_threads"} <= set(doc)
    (row,) = doc["rows"]
    assert {"metric", "value", "unit", "target", "met", "detail"} == set(row)
    assert row["unit"] == "%" and math.isfinite(row["value"]) and isinstance(row["met"], bool)
    data = doc["data"]["batch_1"]
    assert len(data["on_tok_s"]) == len(data["off_tok_s"]) == 3
    assert all(x > 0 for x in data["on_tok_s"] + data["off_tok_s"])
    assert "timing overhead" in p.stdout  # the table a user reads
