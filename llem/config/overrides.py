"""Friendly check of command-line override keys against the schema, before Hydra composes.

Hydra already rejects unknown keys, but says neither what is allowed nor what was probably meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from llem.config.schema import BACKENDS, ExperimentConfig

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


def _is_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def _plain_backend_overrides(argv: list[str]) -> list[tuple[int, str, str]]:
    """(index, backend, value) of plain `backend_name.key=value` overrides in argv."""
    found, after_flag = [], False
    for i, arg in enumerate(argv):
        if after_flag or arg.startswith("-") or "=" not in arg or arg[0] in "+~":
            after_flag = arg in VALUE_FLAGS
            continue
        key, value = arg.split("=", 1)
        if key.split(".", 1)[0] in BACKENDS and "." in key:
            found.append((i, key.split(".", 1)[0], value))
    return found


def _default_backend(argv: list[str]) -> list[str]:
    """The backend of llem's own primary config, when nothing in argv may choose another one."""
    if any(a.split("=", 1)[0] in ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
           or a.startswith(("+experiment", "experiment=")) for a in argv):
        return []
    import yaml

    from llem.config.paths import conf_dir

    try:
        defaults = yaml.safe_load((conf_dir() / "config.yaml").read_text()).get("defaults", [])
    except (OSError, AttributeError, yaml.YAMLError):
        return []
    return [d["backend"] for d in defaults if isinstance(d, dict) and isinstance(d.get("backend"), str)]


def scope_backend_overrides(argv: list[str]) -> tuple[list[str], str | None]:
    """Backend-scoped keys (`vllm.max_tokens=8`) only exist when that backend is composed, but Hydra
    applies single-valued overrides to the study's base config, whose backend is the default one.

    Multirun: a single value becomes a one-value sweep (`choice(8)`), so Hydra leaves it to llem's
    sweeper, which applies it to that backend's jobs only. Run: a key of a backend other than the one
    named by `backend=` is an error that says so (instead of OmegaConf's assertion)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    scoped = _plain_backend_overrides(argv)
    if not scoped:
        return argv, None
    parser = OverridesParser.create()
    out = list(argv)
    multirun = _is_multirun(argv)
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("backend=")] or _default_backend(argv)
    for i, backend, value in scoped:
        try:
            if parser.parse_override(argv[i]).is_sweep_override():
                continue
        except Exception:  # Hydra reports malformed overrides itself
            continue
        if multirun:
            out[i] = f"{argv[i].split('=', 1)[0]}=choice({value})"
        elif chosen and chosen[-1] != backend:
            return argv, (f"'{argv[i]}' sets a knob of backend {backend}, but this run uses "
                          f"backend={chosen[-1]}. Add backend={backend}, or drop the override.")
    return out, None
