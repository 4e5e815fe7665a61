"""Knobs of the codecarbon meter (`energy.codecarbon.<knob>=...`), one field each (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CodeCarbonConfig:
    """CodeCarbon's offline tracker (estimates: docs/energy.md)."""

    country_iso_code: str = "USA"  # ISO 3166-1 alpha-3 code, capitals: the grid mix behind emissions_kg_co2eq
    measure_power_s: float = 1.0  # seconds between CodeCarbon's own power readings (its measure_power_secs)
