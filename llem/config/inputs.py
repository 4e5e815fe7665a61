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
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llem.config.schema import ExperimentConfig, ScenarioConfig

SERVING_KNOBS = ("request_rate", "burstiness", "max_concurrency", "warmup_requests", "seed", "slo")
# Hydra's flags, as its argparse knows them (hydra/_internal/utils.py get_args_parser)
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "--resolve", "-p", "--package", "-r",
               "--run", "-m", "--multirun", "-sc", "--shell-completion", "-cp", "--config-path", "-cn",
               "--config-name", "-cd", "--config-dir", "--experimental-rerun", "-i", "--info")


def check(c: Any, cfg: ExperimentConfig) -> None:
    """Add (key, value, allowed) problems to `c` (llem.config.validate._Checks)."""
    _check_prompt_cap(c, cfg)
    _check_offline_scenario(c, cfg)
    if cfg.backend == "openai" and getattr(cfg, "openai", None) is not None:
        _check_openai(c, cfg)


def _check_prompt_cap(c: Any, cfg: ExperimentConfig) -> None:
    cap = cfg.max_prompts
    if cap is None or cap < 1:
        c.add("max_prompts", cap, "an integer >= 1 (the most prompts a job may use, n)")
        return
    if cfg.n > cap and not cfg.allow_over_max_prompts:
        c.add("n", cfg.n, f"at most max_prompts={cap} (a bound against typos; raise max_prompts, or set "
              "allow_over_max_prompts=true to run it anyway)")


def _check_offline_scenario(c: Any, cfg: ExperimentConfig) -> None:
    s = cfg.scenario
    if s.name != "offline":
        return
    default = ScenarioConfig()
    for knob in SERVING_KNOBS:
        value, dflt = getattr(s, knob), getattr(default, knob)
        if knob == "slo":
            changed = [f"slo.{f.name}" for f in dataclasses.fields(value) if getattr(value, f.name) != getattr(dflt, f.name)]
            for key in changed:
                c.add(f"scenario.{key}", getattr(value, key.split(".")[1]),
                      "its default with scenario=offline (a serving knob: add scenario=serving to use it)")
        elif value != dflt and not (value != value and dflt != dflt):  # nan == nan here
            c.add(f"scenario.{knob}", value,
                  "its default with scenario=offline (a serving knob: add scenario=serving to use it)")


def _check_openai(c: Any, cfg: ExperimentConfig) -> None:
    o = cfg.openai
    if o.base_url is not None:
        try:
            _ = urlparse(str(o.base_url)).port
        except ValueError:
            c.add("openai.base_url", o.base_url, "http(s)://host:port/v1 with a port in 1..65535")
        return
    cmd = o.server.command
    if cmd and str(cmd[0]).strip():
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
