"""Friendly check of command-line override keys against the schema, before Hydra composes.

Hydra already rejects unknown keys, but says neither what is allowed nor what was probably meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from llem.config.schema import ExperimentConfig

GROUPS = ("backend", "model", "dataset", "energy", "experiment")
# Hydra flags whose next argument is a value, not an override.
VALUE_FLAGS = ("-sc", "--shell-completion", "-cd", "--config-dir", "-cn", "--config-name", "-cp",
               "--config-path", "-c", "--cfg", "-p", "--package", "-i", "--info", "--experimental-rerun")


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap(hints[f.name]) for f in dataclasses.fields(cls)}


def unknown_key(key: str, root: type = ExperimentConfig) -> str | None:
    """None if `key` (dotted) exists in the schema, else a message naming what is allowed there."""
    node: Any = root
    path: list[str] = []
    for part in key.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return None  # below a dict/Any field: free-form (e.g. vllm.engine_args.*)
        fields = _field_types(node)
        if part not in fields:
            where = ".".join(path) or "the top level"
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f" Did you mean '{'.'.join([*path, close[0]])}'?" if close else ""
            return (f"unknown key '{key}'.{hint} Allowed under {where}: {', '.join(sorted(fields))}")
        node = fields[part]
        path.append(part)
    return None


def check_argv(argv: list[str]) -> str | None:
    """First problem among plain `key=value` overrides, or None. Flags, groups, +/~ keys pass through."""
    after_flag = False
    for arg in argv:
        if after_flag or arg.startswith("-") or "=" not in arg or arg[0] in "+~":
            after_flag = arg in VALUE_FLAGS
            continue
        key = arg.split("=", 1)[0]
        if key.startswith("hydra") or key in GROUPS or "/" in key or "@" in key:
            continue
        problem = unknown_key(key)
        if problem:
            value = arg.split("=", 1)[1]
            return f"{problem} (override '{key}={value}')"
    return None
