"""What llem's task function returns to Hydra when `study.objective` is set (llem/search/objective.py).

The job runs as always; its result.json gains an `objective` block, and the task function returns the
objective value(s): a float, or a list for several. In a multirun a job that failed, or whose figure is
missing, returns NaN (Optuna records a failed trial and the search goes on); result.json still says
`failed` and llem's manifest records it. A single run (`python -m llem ...`) keeps its exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llem.search.objective import block, hydra_value, parse


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
        print(f"llem: job failed, objective returned as NaN (a failed trial): {type(error).__name__}: "
              f"{str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr, flush=True)
    else:
        for field_name, why in objective["missing"].items():
            print(f"llem: objective {field_name} missing, returned as NaN (a failed trial): {why}",
                  file=sys.stderr, flush=True)
    return hydra_value(objective["values"])
