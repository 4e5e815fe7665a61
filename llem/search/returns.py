"""What llem's task function returns to Hydra when `study.objective` is set (llem/search/objective.py).

The job runs as always; its result.json gains an `objective` block, and the task function returns the
objective value(s): a float, or a list for several. In a multirun a job whose figure is missing raises
`ObjectiveMissing` after its result.json is written (Hydra marks the JobReturn FAILED: Optuna records a
failed trial), a job that failed raises its own error as before. A single run (`python -m llem ...`)
prints what is missing and returns NaN for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llem.search.objective import ObjectiveMissing, block, hydra_value, parse


def _read(path: Path) -> dict[str, Any] | None:
    from llem.io import read_json_object

    try:
        return read_json_object(path)
    except Exception:
        return None


def objective_return(cfg: Any, run: Callable[[Any], Any]) -> float | list[float]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llem.io import atomic_write_json
    from llem.result import RESULT_FILE

    objectives = parse(cfg.study.objective)  # ConfigError: exit 2 on the command line, before any model
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    path = Path(hc.runtime.output_dir) / RESULT_FILE
    error: BaseException | None = None
    try:
        run(cfg)
    except Exception as e:
        if not multirun:
            raise
        error = e
    result = _read(path)
    if result is None:  # failed before a result.json existed (e.g. its config)
        result = {"status": "failed", "error": {"type": type(error).__name__, "message": str(error)}}
    objective = block(result, objectives)
    if path.is_file():
        result["objective"] = objective
        atomic_write_json(path, result)
    if error is not None:
        raise error  # a failed job: a failed trial (its JobReturn is FAILED)
    missing = "; ".join(f"{field_name}: {why}" for field_name, why in objective["missing"].items())
    if missing:
        print(f"llem: objective missing (a failed trial): {missing}", file=sys.stderr, flush=True)
        if multirun:
            raise ObjectiveMissing(f"objective missing: {missing}")
    return hydra_value(objective["values"])
