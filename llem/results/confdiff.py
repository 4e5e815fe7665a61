"""In what two jobs' configs differ, from their result.json (`config`, the resolved experiment config).

Used by `python -m llem.report --vs` for configs matched by their overrides: the line says e.g.
"n: 4 vs 16" instead of only "config hashes differ". Settings that do not change what is measured
(llem.config.schema NON_MEASUREMENT_KEYS / _SUBKEYS) are left out, as config_hash leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llem.config.schema import NON_MEASUREMENT_KEYS, NON_MEASUREMENT_SUBKEYS


def _flat(block: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(block, dict):
        for k, v in block.items():
            _flat(v, f"{prefix}{k}.", out)
    else:
        out[prefix[:-1]] = block


def job_config(job_dir: str | Path) -> dict[str, Any]:
    """The flat resolved config of a job ({} when its result.json cannot be read)."""
    try:
        config = json.loads((Path(job_dir) / "result.json").read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, Any] = {}
    _flat({k: v for k, v in config.items() if k not in NON_MEASUREMENT_KEYS}, "", out)
    skip = {f"{a}.{b}" for a, b in NON_MEASUREMENT_SUBKEYS}
    return {k: v for k, v in out.items() if k not in skip}


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 6) -> list[str]:
    """["n: 4 vs 16", ...]: keys whose values differ (A's value first), at most `limit` then "+k more"."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    shown = [f"{k}: {show_value(a.get(k, '<unset>'))} vs {show_value(b.get(k, '<unset>'))}" for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"+{len(keys) - limit} more")
    return shown


def show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
