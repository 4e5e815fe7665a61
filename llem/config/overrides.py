"""Friendly check of command-line override keys against the schema, before Hydra composes.

Hydra already rejects unknown keys, but says neither what is allowed nor what was probably meant; and
it lets `+key=value` add any key, even to a structured section (`+pytorch.batch_sise=8` would run with
the typo stored). Here `+key` must name a real field too: new keys belong under the free-form
passthrough sections (`PASSTHROUGH`, e.g. `vllm.engine_args`, `energy.extra`). `allowed_for` says
what a key accepts, for the messages `llem.app` writes about Hydra's type errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from pathlib import Path
from typing import Any, Union

from llem.config.aliases import renamed
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


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def passthrough_sections(root: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted names of the schema's free-form dict fields, where `+key=value` may add new keys."""
    found = []
    for name, tp in _field_types(root).items():
        if _is_section(tp):
            found += passthrough_sections(tp, f"{prefix}{name}.")
        elif tp is dict or typing.get_origin(tp) is dict:
            found.append(prefix + name)
    return found


def field_type(key: str, root: type = ExperimentConfig) -> Any:
    """The schema type at dotted `key` (list indices such as `[0]` give the element type), or None."""
    node: Any = root
    for part in key.replace("[", ".[").split("."):
        if part.startswith("["):
            args = typing.get_args(node)
            node = _unwrap(args[0]) if args else None
            continue
        if not _is_section(node):
            return None
        node = _field_types(node).get(part)
    return node


def allowed_for(tp: Any) -> str | None:
    """What a value of schema type `tp` must look like, in words (None when any value goes)."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if _is_section(tp):
        return f"a {tp.__name__} section (set its keys one by one: key.sub=value)"
    origin = typing.get_origin(tp)
    if origin is list:
        inner = allowed_for(_unwrap(typing.get_args(tp)[0])) if typing.get_args(tp) else None
        return f"a list like [a, b]{f' (each item {inner})' if inner else ''}"
    if tp is dict or origin is dict:
        return "a mapping like {key: value}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp)


def close_value(value: str, choices: list[str]) -> str | None:
    """The choice the user probably meant: same letters in another case, a prefix, or a near spelling."""
    low = value.lower()
    for c in choices:
        if c.lower() == low:
            return c
    starts = [c for c in choices if low and c.lower().startswith(low)]
    if len(starts) == 1:
        return starts[0]
    close = difflib.get_close_matches(low, [c.lower() for c in choices], n=1, cutoff=0.6)
    return next((c for c in choices if close and c.lower() == close[0]), None)


def group_hint(value: str, options: list[str]) -> str:
    """` Did you mean 'x'?` (or several that start with what was typed) for a config group option."""
    low = value.lower()
    starts = [o for o in options if low and o.lower().startswith(low)]
    if len(starts) > 1:
        return " Did you mean one of " + ", ".join(starts) + "?"
    one = close_value(value, options)
    return f" Did you mean '{one}'?" if one else ""


# The launcher's knobs once had `study.*` aliases; they are hydra.launcher.* only (llem.launch.settings,
# a layer up: tests/properties/test_import_layers.py ties the two lists).
MOVED_KEYS = {f"study.{k}": f"hydra.launcher.{k}" for k in (
    "timeout_s", "kill_grace_s", "on_unhealthy", "health_max_memory_used_mib", "health_check_processes",
    "health_wait_max_s", "health_poll_s", "gpus_per_job", "progress", "fresh_process")}


def moved_key(key: str) -> str | None:
    """The one-line refusal of a key that moved (`study.timeout_s` → `hydra.launcher.timeout_s`), else None."""
    new = MOVED_KEYS.get(key)
    return f"'{key}' is a launcher knob: set {new} instead" if new else None


def unknown_key(key: str, root: type = ExperimentConfig) -> str | None:
    """None if `key` (dotted) exists in the schema, else a message naming what is allowed there."""
    if root is ExperimentConfig and key in MOVED_KEYS:
        return moved_key(key)
    if root is ExperimentConfig and renamed(key):  # in a YAML file (overrides are renamed before this)
        return renamed(key)
    node: Any = root
    path: list[str] = []
    for part in key.split("."):
        if not _is_section(node):
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


def unknown_keys(container: Any, root: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted keys of a composed config (plain dict) that the schema does not have: keys added with
    `+key=...` from anywhere (command line, a config file, the compose API), below the free-form
    sections excepted."""
    if not isinstance(container, dict) or not _is_section(root):
        return []
    fields = _field_types(root)
    found = []
    for key, value in container.items():
        if key not in fields:
            found.append(prefix + str(key))
        elif _is_section(fields[key]):
            found += unknown_keys(value, fields[key], f"{prefix}{key}.")
    return found


def _groups(argv: list[str]) -> set[str]:
    """Config groups a `key=value` may select: llem's own conf/ folders and those of a --config-dir."""
    from llem.config.paths import conf_dir

    roots = [conf_dir()]
    for i, arg in enumerate(argv):
        if arg in ("-cd", "--config-dir") and i + 1 < len(argv):
            roots.append(Path(argv[i + 1]).expanduser())
        elif arg.startswith("--config-dir="):
            roots.append(Path(arg.split("=", 1)[1]).expanduser())
    found = set(GROUPS)
    for root in roots:
        if root.is_dir():
            dirs = [*root.glob("*/"), *root.glob("*/*/")]  # groups and nested groups, not a whole tree
            found |= {p.relative_to(root).as_posix() for p in dirs if p.is_dir()}
    return found


def check_argv(argv: list[str]) -> str | None:
    """First problem among `key=value` and `+key=value` overrides, or None. Flags, config groups,
    `hydra.*` and `~key` (deletion: Hydra refuses unknown ones itself) pass through."""
    after_flag = False
    groups: set[str] | None = None
    for arg in argv:
        if after_flag or arg.startswith("-") or "=" not in arg or arg[0] == "~":
            after_flag = arg in VALUE_FLAGS
            continue
        key, value = arg.split("=", 1)
        added = key.startswith("+")
        key = key.lstrip("+")
        if key.startswith("hydra") or "/" in key or "@" in key:
            continue
        groups = _groups(argv) if groups is None else groups
        if key in groups:
            continue
        problem = unknown_key(key)
        if problem:
            extra = (f" '+' adds keys only under the free-form sections ({', '.join(passthrough_sections())})."
                     if added else "")
            return f"{problem} (override '{arg}').{extra}"
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
