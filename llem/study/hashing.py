"""Config and study-design hashes: sha256 of canonical JSON, first 16 hex chars."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from llem.config.aliases import RENAMED
from llem.config.schema import BACKENDS, METER_NODES, NON_MEASUREMENT_KEYS, NON_MEASUREMENT_SUBKEYS

HASH_LEN = 16


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, float) and obj.is_integer():
        return obj  # keep 1.0 distinct from 1 in text, but stable across runs
    return obj


def canonical_json(obj: Any) -> str:
    """Key order never changes the text; enums hash as their values."""
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:HASH_LEN]


def measured_part(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved experiment config minus settings that do not change what is measured.

    Drops hydra/study/job bookkeeping, cache locations, and the section of every backend the job does
    not use.
    """
    backend = config.get("backend")
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in NON_MEASUREMENT_KEYS:
            continue
        if key in BACKENDS and key != backend:
            continue
        if key == "scenario" and isinstance(value, Mapping) and value.get("name", "offline") == "offline":
            continue  # serving knobs change nothing offline (and offline hashes stay as before scenarios)
        if key == "energy" and isinstance(value, Mapping):
            value = _energy(value)
        if key == "gpu" and isinstance(value, Mapping) and all(v in (None, "leave") for v in value.values()):
            continue  # GPU left as it is: hashes stay as before GPU settings existed
        out[key] = value
    for key, sub in NON_MEASUREMENT_SUBKEYS:
        if isinstance(out.get(key), Mapping) and sub in out[key]:
            out[key] = {k: v for k, v in out[key].items() if k != sub}
    return out


def _energy(energy: Mapping[str, Any]) -> dict[str, Any]:
    """The energy section as config_hash has always seen it. No node meter, auto basis: hashed as before
    them. A renamed knob (llem.config.aliases) under its old flat name, and a meter's node left out while
    its other knobs hold their defaults: hashed as before the nodes, and a new meter changes no hash."""
    out = {k: v for k, v in energy.items() if not (k == "basis" and v == "auto") and not (
        k == "node" and isinstance(v, Mapping) and v.get("source", "none") == "none")}
    for old, new in RENAMED.items():  # energy.rapl.root → rapl_root
        section, node, knob = new.split(".")
        if section == "energy" and isinstance(out.get(node), Mapping) and knob in out[node]:
            out[old.split(".", 1)[1]] = out[node][knob]
            out[node] = {k: v for k, v in out[node].items() if k != knob}
    for node, cls in METER_NODES.items():
        defaults = dataclasses.asdict(cls())
        if isinstance(out.get(node), Mapping) and all(defaults.get(k, defaults) == v for k, v in out[node].items()):
            del out[node]
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """`config_hash` of result.json: equal across the cycles of one config."""
    return digest(measured_part(config))


def design_hash(config_hashes: Iterable[str]) -> str:
    """Study design hash: the set of planned configs (order, cycles, gaps do not enter)."""
    return digest(sorted(set(config_hashes)))
