"""The meter interface the measurement window uses: start() ... stop() -> EnergyReading.

Like Zeus's ZeusMonitor windows, but one object per meter so GPU and CPU meters compose. A meter
does its I/O in start/stop (and, if it samples, in its own thread); nothing of it runs per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from llem.errors import UserError


@dataclass
class DeviceEnergy:
    """Energy one device used during the window."""

    device: str  # e.g. "gpu:0", "cpu:package-0", "dram:package-0"
    kind: str  # gpu | cpu | dram
    energy_j: float
    method: str  # e.g. nvml_counter, nvml_power_integral, rapl_counter, codecarbon_estimate
    extra: dict[str, Any] = field(default_factory=dict)
    estimate: bool = False  # True for modelled figures (codecarbon): never summed with measured ones


@dataclass
class EnergyReading:
    """What one meter saw over one window."""

    meter: str
    measured: bool
    duration_s: float = 0.0
    devices: list[DeviceEnergy] = field(default_factory=list)
    reason: str | None = None  # why not measured, when measured is False
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    timeseries: list[dict[str, Any]] | None = None  # one row per sample per device

    def total_j(self, kind: str) -> float | None:
        values = [d.energy_j for d in self.devices if d.kind == kind]
        return sum(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("timeseries")
        return d


class MeterUnavailable(UserError, RuntimeError):
    """This meter cannot measure on this host; the message says why and how to fix it."""


class Meter(ABC):
    """A source of energy readings around a window. Construct cheaply; `probe` checks the host (before
    the model loads) and raises MeterUnavailable with a reason; `start`/`stop` do only cheap reads."""

    name: str = "meter"
    measures: bool = True  # False for NoMeter: nothing to baseline or warm up
    update_period_s: float | None = None  # how often the underlying counter advances, where known

    @classmethod
    def from_config(cls, cfg: Any) -> Meter:
        """This meter from the `energy` config (EnergyConfig); the registry (llem/energy/meters) calls it."""
        return cls()

    def probe(self) -> None:
        """Open handles and check the hardware is readable; raise MeterUnavailable otherwise."""

    def describe(self) -> str:
        """One line for the selection notes: what this meter will measure."""
        return self.name

    def identities(self) -> dict[str, str]:
        """Stable identity per device (GPU UUID, host+RAPL zone) so a baseline can be cached per device."""
        return {}

    def temperatures(self) -> dict[str, float] | None:
        """Current temperature per device (°C) for thermal warmup; None where the meter has none."""
        return None

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> EnergyReading: ...

    def attribute(self) -> Any:
        """Called once the model is loaded: decide which devices are the job's (nvml: GPUs running its
        processes). Default: every device the meter opened."""
        return None

    def close(self) -> None:
        """Release handles (NVML, threads). Safe to call twice."""


class NoMeter(Meter):
    """Records that energy was not measured, and why."""

    name = "none"
    measures = False

    def __init__(self, reason: str = "energy measurement disabled") -> None:
        self.reason = reason
        self._t0 = 0.0

    def start(self) -> None:
        import time

        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        import time

        return EnergyReading(
            meter=self.name, measured=False, reason=self.reason, duration_s=time.perf_counter() - self._t0
        )
