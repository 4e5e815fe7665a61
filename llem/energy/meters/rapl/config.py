"""Knobs of the RAPL meter (`energy.rapl.<knob>=...`), one field each (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RaplConfig:
    """Linux powercap RAPL counters (docs/energy.md "RAPL permissions")."""

    root: str = "/sys/class/powercap"  # the powercap sysfs folder (a container: the host's, mounted; tests: a fake)
