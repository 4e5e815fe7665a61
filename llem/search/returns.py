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
    from omegaconf import OmegaConf

    from llem.io import atomic_write_json
    from llem.result import RESULT_FILE

    spec = cfg.study.objective
    objectives = parse(OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec)  # ConfigError: exit 2
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:
        _note_support(hc)
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


_noted = False


def _note_support(hc: Any) -> None:
    """Once per process, under a launcher not llem's (llem's launcher prints it itself): what this sweeper x
    launcher combination gives a measured study (llem.search.launching.SUPPORT)."""
    global _noted
    if _noted:
        return
    _noted = True
    from omegaconf import OmegaConf

    from llem.search.launching import launcher_kind, support_line, sweeper_kind

    node = OmegaConf.create({"hydra": {"sweeper": {"_target_": str(hc.sweeper.get("_target_", ""))},
                                       "launcher": {"_target_": str(hc.launcher.get("_target_", ""))}}})
    if launcher_kind(node) != "llem":
        line = support_line(sweeper_kind(node), launcher_kind(node))
        if line:
            print(f"llem: {line}", file=sys.stderr, flush=True)
