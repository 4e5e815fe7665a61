"""Energy meters. `build_meters` turns the `energy` config into meters plus a note of what was picked."""

from __future__ import annotations

from dataclasses import dataclass, field

from llem.config.schema import EnergyConfig
from llem.energy.base import DeviceEnergy, EnergyReading, Meter, NoMeter

__all__ = ["DeviceEnergy", "EnergyReading", "Meter", "NoMeter", "MeterSelection", "build_meters"]


@dataclass
class MeterSelection:
    meters: list[Meter]
    notes: list[str] = field(default_factory=list)  # what auto tried and why it picked what it did


def build_meters(cfg: EnergyConfig) -> MeterSelection:
    """Meters for one job. Hardware meters arrive in energy/{nvml,rapl,zeus,codecarbon}.py."""
    if cfg.meter == "none":
        return MeterSelection([NoMeter(cfg.reason or "disabled by configuration (energy=none)")])
    if cfg.meter == "auto":
        reason = "auto: no supported energy meter on this host (no NVIDIA GPU via NVML, no readable RAPL)"
        return MeterSelection([NoMeter(reason)], [reason])
    raise ValueError(f"energy.meter={cfg.meter!r} is not available in this build")
