"""More checks of what the user wrote, before anything loads (pure: no Hydra, no torch, no network).

Called from `llem.config.validate.problems` (one line there) and from `llem.app.main` (the command line):

- the number of prompts `n` is capped by `max_prompts` (as `study.max_jobs` caps a study), unless
  `allow_over_max_prompts=true`: a typo such as `n=100000000` is refused instead of running for hours;
- serving knobs (`scenario.request_rate`, ...) changed while `scenario=offline`: refused, with a pointer
  to `scenario=serving` (the offline scenario would ignore them silently);
- `openai.base_url` with a port out of range; `openai.server.command` whose program is missing or not
  executable (checked on the host's PATH, without starting it);
- Hydra flags (`-m`, `--cfg`, ...) after overrides, which argparse refuses with its usage text.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llem.config.schema import ExperimentConfig, ScenarioConfig

SERVING_KNOBS = ("request_rate", "burstiness", "max_concurrency", "warmup_requests", "seed", "slo")
# Hydra's flags, as its argparse knows them (hydra/_internal/utils.py get_args_parser)
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "--resolve", "-p", "--package", "-r",
               "--run", "-m", "--multirun", "-sc", "--shell-completion", "-cp", "--config-path", "-cn",
               "--config-name", "-cd", "--config-dir", "--experimental-rerun", "-i", "--info")


SEED_MAX = 2**32 - 1  # numpy's and vLLM's seed range (torch takes more; the smallest wins)


def check(c: Any, cfg: ExperimentConfig) -> None:
    """Add (key, value, allowed) problems to `c` (llem.config.validate.Checks)."""
    _check_prompt_cap(c, cfg)
    _check_offline_scenario(c, cfg)
    if cfg.backend == "openai" and getattr(cfg, "openai", None) is not None:
        _check_openai(c, cfg)
    _check_ranges(c, cfg)
    _check_every_leaf(c, cfg)


def _check_ranges(c: Any, cfg: ExperimentConfig) -> None:
    """Knobs that had no range check (found by tests/properties/test_every_key.py)."""
    for key, value in (("seed", cfg.seed), ("study.shuffle_seed", cfg.study.shuffle_seed)):
        if value is not None and not 0 <= value <= SEED_MAX:
            c.add(key, value, f"{'null or ' if key != 'seed' else ''}an integer in [0, {SEED_MAX}]")
    e = cfg.energy
    _at_least(c, "energy.baseline_ttl_s", e.baseline_ttl_s, 0.0)
    _at_least(c, "energy.thermal_plateau_s", e.thermal_plateau_s, 0.0, open_=True)
    _at_least(c, "energy.thermal_tolerance_c", e.thermal_tolerance_c, 0.0)
    if e.gpu_indices is not None and any(not isinstance(i, int) or i < 0 for i in e.gpu_indices):
        c.add("energy.gpu_indices", list(e.gpu_indices), "null or a list of CUDA ordinals >= 0")
    s = cfg.study
    _at_least(c, "study.job_estimate_s", s.job_estimate_s, 0.0)
    j = cfg.study_job
    if j.cycle is None or j.cycle < 0:
        c.add("study_job.cycle", j.cycle, "an integer >= 0 (set by llem's sweeper)")
    if j.index is not None and j.index < 0:
        c.add("study_job.index", j.index, "null or an integer >= 0 (set by llem's sweeper)")
    _at_least(c, "debug.sleep_s", cfg.debug.sleep_s, 0.0)
    if not 0 <= cfg.debug.exit_code <= 255:
        c.add("debug.exit_code", cfg.debug.exit_code, "an integer in [0, 255] (a process exit status)")


def _at_least(c: Any, key: str, value: float | None, lo: float, open_: bool = False) -> None:
    if value is None or value != value or value < lo or (open_ and value == lo):
        c.add(key, value, f"a number {'>' if open_ else '>='} {lo:g}")


def _check_every_leaf(c: Any, cfg: ExperimentConfig) -> None:
    """Rules for every key, so a new knob has them too: no setting is nan, and none is the empty string
    (null is the default; "" would reach a loader or a server as a name)."""
    from llem.config.schema import BACKENDS

    seen = {key for key, _, _ in c.problems}
    skip = {name for name in BACKENDS if name != cfg.backend}

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            if not prefix and f.name in skip:
                continue
            value, key = getattr(node, f.name), prefix + f.name
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif key in seen:
                continue
            elif isinstance(value, float) and value != value:
                c.add(key, value, "a number, not nan")
            elif isinstance(value, str) and not value.strip() and not isinstance(value, Enum):
                c.add(key, repr(value), "a non-empty string" + (" (or null for the default)" if _optional(node, f) else ""))

    walk(cfg, "")


def _optional(node: Any, f: Any) -> bool:
    return "None" in str(f.type)


def _check_prompt_cap(c: Any, cfg: ExperimentConfig) -> None:
    cap = cfg.max_prompts
    if cap is None or cap < 1:
        c.add("max_prompts", cap, "an integer >= 1 (the most prompts a job may use, n)")
        return
    if cfg.n > cap and not cfg.allow_over_max_prompts:
        c.add("n", cfg.n, f"at most max_prompts={cap} (a bound against typos; raise max_prompts, or set "
              "allow_over_max_prompts=true to run it anyway)")


def _check_offline_scenario(c: Any, cfg: ExperimentConfig) -> None:
    """Every scenario knob but `name` is a serving knob (arrivals, SLO, trace, ramp-up): changed under
    scenario=offline it would be ignored silently, so it is refused (nested sections key by key)."""
    s = cfg.scenario
    if s.name != "offline":
        return

    def walk(value: Any, dflt: Any, prefix: str) -> None:
        for f in dataclasses.fields(dflt):
            if prefix == "scenario" and f.name == "name":
                continue
            v, d = getattr(value, f.name), getattr(dflt, f.name)
            if dataclasses.is_dataclass(d):
                walk(v, d, f"{prefix}.{f.name}")
            elif v != d and not (v != v and d != d):  # nan == nan here
                c.add(f"{prefix}.{f.name}", v,
                      "its default with scenario=offline (a serving knob: add scenario=serving to use it)")

    walk(s, ScenarioConfig(), "scenario")


def _check_openai(c: Any, cfg: ExperimentConfig) -> None:
    o = cfg.openai
    if o.base_url is not None:
        try:
            _ = urlparse(str(o.base_url)).port
        except ValueError:
            c.add("openai.base_url", o.base_url, "http(s)://host:port/v1 with a port in 1..65535")
        return
    cmd = o.server.command
    if cmd and str(cmd[0]).strip() and not any(k == "openai.server.command" for k, _, _ in c.problems):
        program = str(cmd[0])
        found = shutil.which(program) if os.sep not in program else program
        if found is None or not Path(found).exists():
            c.add("openai.server.command", cmd, f"an argv whose program exists: '{program}' is not a file and not "
                  "on PATH")
        elif Path(found).is_dir() or not os.access(found, os.X_OK):
            c.add("openai.server.command", cmd, f"an argv whose program is executable: '{found}' is "
                  f"{'a directory' if Path(found).is_dir() else 'not executable (chmod +x it)'}")


def argv_order_problem(argv: list[str]) -> str | None:
    """A Hydra flag after an override, with overrides after it too: argparse refuses that with its whole
    usage text. One line instead, saying to put the flags first."""
    seen_override = False
    for i, arg in enumerate(argv):
        if arg.startswith("-") and arg.split("=", 1)[0] in HYDRA_FLAGS:
            rest = argv[i + 1:]
            if seen_override and any("=" in a and not a.startswith("-") for a in rest[1 if arg in _VALUED else 0:]):
                return (f"put Hydra's flags before the overrides: '{arg}' comes after an override; allowed "
                        f"python -m llem {' '.join(_flags_first(argv))}")
            continue
        if "=" in arg and not (i and argv[i - 1] in _VALUED):
            seen_override = True
    return None


_VALUED = ("-c", "--cfg", "-p", "--package", "-sc", "--shell-completion", "-cp", "--config-path", "-cn",
           "--config-name", "-cd", "--config-dir", "--experimental-rerun", "-i", "--info")


def _flags_first(argv: list[str]) -> list[str]:
    flags: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg.split("=", 1)[0] in HYDRA_FLAGS:
            take = 2 if arg in _VALUED and i + 1 < len(argv) else 1
            flags += argv[i:i + take]
            i += take
            continue
        rest.append(arg)
        i += 1
    return flags + rest
