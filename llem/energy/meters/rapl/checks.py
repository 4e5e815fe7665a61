"""Checks of `energy.rapl.*` before any model loads (pure). A folder that is missing or unreadable is
refused by the meter's probe when energy=rapl (with the fix), and recorded as a note under energy=auto."""

from __future__ import annotations

from typing import Any


def problems(energy: Any) -> list[tuple[str, Any, str]]:
    root = energy.rapl.root
    if not isinstance(root, str) or not root.strip() or "\x00" in root:
        return [("energy.rapl.root", repr(root) if isinstance(root, str) else root,
                 "a folder path (the powercap sysfs root, default /sys/class/powercap)")]
    return []
