"""Energy meters. `build_meters` (llem/energy/selection.py) turns the `energy` config into meters plus a note
of what was picked; each meter is a folder under llem/energy/meters/ (registry: METERS)."""

from __future__ import annotations

from llem.energy.base import DeviceEnergy, EnergyReading, Meter, MeterUnavailable, NoMeter
from llem.energy.selection import NO_METER, MeterSelection, build_meters, check_config, make_meter

__all__ = ["DeviceEnergy", "EnergyReading", "Meter", "MeterUnavailable", "NoMeter", "MeterSelection",
           "NO_METER", "build_meters", "check_config", "make_meter"]
