"""The launcher's knobs, `hydra.launcher.*`: declared once, here (the plugin's `LlemLauncherConf`
subclasses `LaunchSettings` and adds only `_target_`), checked once (`resolve`), before any job starts.

The `study.*` aliases of these knobs are gone: `study.timeout_s=...` is refused with one line naming
`hydra.launcher.timeout_s` (llem.config.overrides.MOVED_KEYS; a test ties that list to `names()`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional

from llem.errors import ConfigError

ON_UNHEALTHY = ("warn", "wait", "abort")
FRESH_PROCESS = ("auto", "fork", "spawn")
LAUNCHER_PREFIX = "hydra.launcher"


@dataclass
class LaunchSettings:
    """Every knob of llem's launcher (docs/launcher.md "Launcher settings")."""

    timeout_s: Optional[float] = None  # per-job limit for the whole job process, start-up included; null/0 = none
    kill_grace_s: float = 10.0  # a job being stopped (timeout, Ctrl-C) gets SIGTERM, then SIGKILL this long after
    on_unhealthy: str = "warn"  # warn | wait | abort: what a failed GPU health check does
    health_max_memory_used_mib: float = 1024.0  # GPU memory already in use above this = unhealthy
    health_check_processes: bool = True  # a process not ours on the job's GPUs = unhealthy
    health_wait_max_s: float = 600.0  # on_unhealthy=wait: give up waiting after this long (then run, warned)
    health_poll_s: float = 10.0  # on_unhealthy=wait: re-check interval
    gpus_per_job: int = 0  # 0: one job at a time, no pinning; N: floor(GPUs / N) jobs at once, pinned
    progress: bool = True  # a progress line before each job
    fresh_process: str = "auto"  # fork (from a preloaded zygote) | spawn (new interpreter) | auto (fork on Linux)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(LaunchSettings))

    @classmethod
    def resolve(cls, launcher: Mapping[str, Any]) -> LaunchSettings:
        """The `hydra.launcher.*` values, checked: raise ConfigError naming every bad key, its value and
        what is allowed. Keys that are not knobs (`_target_`) are ignored."""
        values: dict[str, Any] = {name: launcher.get(name, getattr(LaunchSettings, name))
                                  for name in LaunchSettings.names()}
        problems: list[tuple[str, Any, str]] = []

        def key(name: str) -> str:
            return f"{LAUNCHER_PREFIX}.{name}"

        def number(name: str, lo: float, optional: bool = False, lo_open: bool = False) -> None:
            v = values[name]
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < lo or (lo_open and v == lo):
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
        return LaunchSettings(**values)
