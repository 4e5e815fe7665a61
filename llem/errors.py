"""One error root for llem (as Zeus's `ZeusBaseError`).

`LlemError` is anything llem raises on purpose; `UserError` is a problem with what the user asked for
(a setting, a file, a folder, a host that cannot do it). `python -m llem` maps every `UserError` to
one `llem:` line per problem on stderr and its `exit_code` (2), before any model loads (the one rule:
`llem/app.py`, `_user_errors_exit_2`); anything else is a bug and keeps its traceback. Subclasses say
where the problem lies (ConfigError, DatasetError, MeterUnavailable, ModelNotFound, StudyError, ...).
Checks that need the host or the model's config.json, not its weights: `llem/config/preflight.py`.
"""

from __future__ import annotations

from typing import Any


class LlemError(Exception):
    """Root of every error llem raises on purpose."""


class UserError(LlemError):
    """Bad input or an unusable host: one clear line (key or file, value, what is allowed), exit 2."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """One or more invalid settings; `problems` lists (key, value, allowed). Here (not in llem.config)
    so that modules below the config layer (models, launch) can raise it; llem.config.validate re-exports it."""

    def __init__(self, problems: list[tuple[str, Any, str]], message: str | None = None) -> None:
        self.problems = problems
        lines = [f"{key}={show_value(value)} is invalid: allowed {allowed}" for key, value, allowed in problems]
        super().__init__(message or "\n".join(lines))


def show_value(value: Any) -> str:
    if hasattr(value, "value"):  # Enum
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
