"""Range checks of codecarbon's knobs (`energy.codecarbon_measure_power_s`), before any model loads (pure)."""

from __future__ import annotations

from typing import Any


def problems(cfg: Any) -> list[tuple[str, Any, str]]:
    if cfg.codecarbon_measure_power_s <= 0:
        return [("energy.codecarbon_measure_power_s", cfg.codecarbon_measure_power_s, "a number > 0")]
    return []
