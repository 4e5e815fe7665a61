"""The launcher's knobs: `hydra.launcher.*` (where Hydra users look), with `study.*` as aliases.

Every key has one built-in default (the fields below). A key set away from its default in one place
wins; set to two different non-default values in both places it is refused (ConfigError naming both),
so a study never runs with a setting the user did not mean. Checked before any job starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional

from llem.errors import ConfigError

ON_UNHEALTHY = ("warn", "wait", "abort")
FRESH_PROCESS = ("auto", "fork", "spawn")
LAUNCHER_PREFIX = "hydra.launcher"
STUDY_PREFIX = "study"


def is_llem_app(config: Mapping[str, Any]) -> bool:
    """A config composed from llem's schema (it has the study and study_job nodes); any other Hydra
    app gets a plain process-per-job launcher: no gaps, no study settings, no llem files."""
    return "study" in config and "study_job" in config


@dataclass(frozen=True)
class LaunchSettings:
    timeout_s: Optional[float] = None  # per job process, start-up included; None/0 = no limit
    kill_grace_s: float = 10.0  # SIGTERM → SIGKILL delay when a job is stopped
    on_unhealthy: str = "warn"
    health_max_memory_used_mib: float = 1024.0
    health_check_processes: bool = True
    health_wait_max_s: float = 600.0
    health_poll_s: float = 10.0
    gpus_per_job: int = 0
    progress: bool = True
    fresh_process: str = "auto"  # how each job's process starts: fork (from the zygote) | spawn | auto

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_study(cls, study: Mapping[str, Any]) -> LaunchSettings:
        """Settings from `study.*` alone (apps that set no `hydra.launcher.*` knobs)."""
        return cls.resolve({}, study)

    @classmethod
    def resolve(cls, launcher: Mapping[str, Any], study: Mapping[str, Any]) -> LaunchSettings:
        """`hydra.launcher.*` values merged with their `study.*` aliases; raise ConfigError naming every
        bad key (as the user wrote it), its value and what is allowed."""
        defaults = cls()
        values: dict[str, Any] = {}
        where: dict[str, str] = {}
        problems: list[tuple[str, Any, str]] = []
        for name in cls.names():
            default = getattr(defaults, name)
            lv, sv = launcher.get(name, default), study.get(name, default)
            if lv != default and sv != default and lv != sv:
                problems.append((f"{STUDY_PREFIX}.{name}", sv,
                                 f"unset or the same as {LAUNCHER_PREFIX}.{name}={lv} (study.{name} is an alias "
                                 f"of {LAUNCHER_PREFIX}.{name}; set one of them)"))
            values[name], where[name] = (lv, LAUNCHER_PREFIX) if lv != default else (sv, STUDY_PREFIX)

        def key(name: str) -> str:
            return f"{where[name]}.{name}"

        def number(name: str, lo: float, optional: bool = False, lo_open: bool = False) -> None:
            v = values[name]
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (lo_open and v == lo):
                allowed = f"a number {'>' if lo_open else '>='} {lo}" + (" or null" if optional else "")
                problems.append((key(name), v, allowed))

        number("timeout_s", 0, optional=True)
        number("kill_grace_s", 0)
        number("health_max_memory_used_mib", 0)
        number("health_wait_max_s", 0)
        number("health_poll_s", 0, lo_open=True)
        if values["on_unhealthy"] not in ON_UNHEALTHY:
            problems.append((key("on_unhealthy"), values["on_unhealthy"], f"one of {', '.join(ON_UNHEALTHY)}"))
        if values["fresh_process"] not in FRESH_PROCESS:
            problems.append((key("fresh_process"), values["fresh_process"],
                             "one of auto (fork on Linux, else spawn), fork, spawn"))
        for flag in ("health_check_processes", "progress"):
            if not isinstance(values[flag], bool):
                problems.append((key(flag), values[flag], "true or false"))
        g = values["gpus_per_job"]
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            problems.append((key("gpus_per_job"), g, "an integer >= 0 (0 = one job at a time, no pinning)"))
        if problems:
            raise ConfigError(problems)
        if values["timeout_s"] == 0:
            values["timeout_s"] = None
        return cls(**values)
