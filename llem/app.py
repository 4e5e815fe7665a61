"""The Hydra app: `python -m llem [overrides]` composes one experiment and runs it as a job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import llem.config.store  # noqa: F401  (registers the structured schema)
from llem.config.paths import conf_dir
from llem.config.validate import ConfigError
from llem.energy.base import MeterUnavailable


def to_experiment(cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
    """Typed dataclass + plain resolved dict (enums as strings) of a composed config."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    return OmegaConf.to_object(cfg), resolved


def run_from_hydra(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llem.job import run_job
    from llem.study.hashing import config_hash
    from llem.summary import render

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    experiment, resolved = to_experiment(cfg)
    chash = experiment.study_job.config_hash or config_hash(resolved)
    try:
        result = run_job(experiment, out_dir, resolved, list(hc.overrides.task), chash)
    except (ConfigError, MeterUnavailable) as e:  # a user's setting, not a bug: no traceback in a single run
        if hc.mode == RunMode.RUN:
            what = "invalid configuration" if isinstance(e, ConfigError) else "energy meter unavailable"
            print(f"llem: {what}:\n  {str(e).replace(chr(10), chr(10) + '  ')}\n  (result with status "
                  f"failed: {out_dir}/result.json)", file=sys.stderr)
            sys.exit(2)
        raise
    if not experiment.quiet:
        print(render(result.as_dict(), str(out_dir)), flush=True)
    return {"status": result.status, "config_hash": chash, "output_tok_s": result.throughput.get("output_tok_s")}


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    return run_from_hydra(cfg)


def main() -> None:
    """Console entry: friendly unknown-key errors first, then Hydra."""
    from llem.config.overrides import check_argv, scope_backend_overrides

    sys.argv[1:], problem = scope_backend_overrides(sys.argv[1:])
    problem = problem or check_argv(sys.argv[1:])
    if problem:
        print(f"llem: {problem}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
