"""The launcher's knobs, read from the `study` config node and checked before any job starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from llem.config.validate import ConfigError

ON_UNHEALTHY = ("warn", "wait", "abort")
FRESH_PROCESS = ("auto", "fork", "spawn")


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
    def from_study(cls, study: Mapping[str, Any]) -> LaunchSettings:
        """Raise ConfigError naming every bad key, its value and what is allowed."""
        problems: list[tuple[str, Any, str]] = []
        values: dict[str, Any] = {}
        defaults = cls()
        for name in cls.__dataclass_fields__:
            values[name] = study.get(name, getattr(defaults, name))

        def number(key: str, lo: float, optional: bool = False, lo_open: bool = False) -> None:
            v = values[key]
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (lo_open and v == lo):
                allowed = f"a number {'>' if lo_open else '>='} {lo}" + (" or null" if optional else "")
                problems.append((f"study.{key}", v, allowed))

        number("timeout_s", 0, optional=True)
        number("kill_grace_s", 0)
        number("health_max_memory_used_mib", 0)
        number("health_wait_max_s", 0)
        number("health_poll_s", 0, lo_open=True)
        if values["on_unhealthy"] not in ON_UNHEALTHY:
            problems.append(("study.on_unhealthy", values["on_unhealthy"], f"one of {', '.join(ON_UNHEALTHY)}"))
        if values["fresh_process"] not in FRESH_PROCESS:
            problems.append(("study.fresh_process", values["fresh_process"],
                             "one of auto (fork on Linux, else spawn), fork, spawn"))
        g = values["gpus_per_job"]
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            problems.append(("study.gpus_per_job", g, "an integer >= 0 (0 = one job at a time, no pinning)"))
        if problems:
            raise ConfigError(problems)
        if values["timeout_s"] == 0:
            values["timeout_s"] = None
        return cls(**values)
