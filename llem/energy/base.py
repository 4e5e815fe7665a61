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
class Thermal:
    """A GPU's temperature, clocks and throttling over the window: the result's energy.thermal.<device>."""

    temperature_start_c: float | None
    temperature_end_c: float | None
    temperature_max_c: float | None
    temperature_drift_c: float | None  # max − start: > DRIFT_LIMIT_C is warned about
    sm_clock_mhz: dict[str, float] | None  # mean, min, max
    mem_clock_mhz: dict[str, float] | None
    throttle_s: dict[str, float]  # seconds under each throttle reason
    power_limit_w: float | None
    persistence_mode: str | None  # on | off


@dataclass
class OtherProcesses:
    """Compute processes the vendor library lists on a GPU, read after the window."""

    pids: list[int]
    others: list[int]  # not of this job's process tree: their energy is in the job's figures
    attributable: bool  # some pid is the job's, or none is listed (False: a container's PID namespace?)


@dataclass
class DeviceEnergy:
    """Energy one device used during the window."""

    device: str  # e.g. "gpu:0", "cpu:package-0", "dram:package-0"
    kind: str  # gpu | cpu | dram
    energy_j: float
    method: str  # e.g. nvml_counter, nvml_power_integral, rapl_counter, codecarbon_estimate
    # The meter's own facts about this device (counter readings, power source, BMC sensor): free-form per
    # meter, written to the result's energy.devices[].extra unchanged.
    extra: dict[str, Any] = field(default_factory=dict)
    estimate: bool = False  # True for modelled figures (codecarbon): never summed with measured ones
    thermal: Thermal | None = None  # GPU meters (always set by them; the energy block warns from it)
    other_processes: OtherProcesses | None = None  # GPU meters: None where the library could not list them

    def as_dict(self) -> dict[str, Any]:
        """The result's energy.devices[] entry: a GPU meter's thermal and other_processes inside `extra`."""
        extra = dict(self.extra)
        if self.thermal is not None:  # a GPU meter's device: both keys, other_processes null when not listed
            extra["thermal"] = asdict(self.thermal)
            extra["other_processes"] = None if self.other_processes is None else asdict(self.other_processes)
        return {"device": self.device, "kind": self.kind, "energy_j": self.energy_j, "method": self.method,
                "extra": extra, "estimate": self.estimate}


@dataclass
class Sampling:
    """How a sampling meter (nvml, amdsmi, rapl, node) read its window: the result's energy.sampling.<meter>."""

    sample_hz: float
    samples_min: int  # fewest samples any of its devices got in the window
    t_start_s: float  # first sample (perf_counter)
    t_end_s: float  # last sample (perf_counter)

    def step_s(self) -> float | None:
        """The energy counter's measured step, where the meter has one."""
        return None

    def intervals_s(self) -> list[float]:
        """The time resolutions of its series: the counter's step (where it has one) and the sample interval."""
        step = self.step_s()
        return ([step] if step else []) + ([1.0 / self.sample_hz] if self.sample_hz else [])

    def block(self, update_period_s: float | None) -> dict[str, Any]:
        return {"sample_hz": self.sample_hz, "samples_min": self.samples_min, "update_period_s": update_period_s,
                "counter_step_s": self.step_s()}


@dataclass
class CounterSampling(Sampling):
    """A GPU meter's sampling: also the energy counter's measured step."""

    counter_step_s: float | None = None  # the largest measured step of its GPUs' counters (None: no counter)

    def step_s(self) -> float | None:
        return self.counter_step_s


@dataclass
class Attribution:
    """How a GPU meter decided which GPUs are the job's: the result's energy.attribution."""

    method: str  # energy.gpu_indices | <meter>_processes | cuda_visible_devices
    reason: str
    devices: dict[str, dict[str, list[int]]] | None = None  # per GPU: {"pids": [...], "job_pids": [...]}
    final: bool = False  # decided (after the model loaded, or by energy.gpu_indices); False: provisional

    def as_dict(self) -> dict[str, Any]:
        devices = {} if self.devices is None else {"devices": self.devices}
        return {"method": self.method, **devices, "reason": self.reason}


@dataclass
class UnattributedDevice:
    """A visible GPU that ran none of the job's processes: measured, listed, never in a total."""

    device: str
    kind: str
    energy_j: float
    uuid: str
    name: str
    method: str | None
    mean_power_w: float | None
    why: str


@dataclass
class EnergyCurve:
    """Cumulative energy (J) of one device at perf_counter times (s): the counter at its tick times."""

    t_s: list[float]
    energy_j: list[float]


@dataclass
class EnergyReading:
    """What one meter saw over one window."""

    meter: str
    measured: bool
    duration_s: float = 0.0
    devices: list[DeviceEnergy] = field(default_factory=list)
    reason: str | None = None  # why not measured, when measured is False
    warnings: list[str] = field(default_factory=list)
    timeseries: list[dict[str, Any]] | None = None  # one row per sample per device
    update_period_s: float | None = None  # how often its counter advances: a shorter window is warned about
    sampling: Sampling | None = None  # sampling meters: rate, fewest samples, first and last sample
    attribution: Attribution | None = None  # GPU meters: how the job's GPUs were decided
    unattributed_devices: list[UnattributedDevice] = field(default_factory=list)  # GPU meters: left out
    curves: dict[str, EnergyCurve] = field(default_factory=dict)  # GPU meters: per device, the phase split's input
    # Meter-specific facts (rapl: root, frozen_zones; node: BMC source and sensor; codecarbon: emissions):
    # written to the result's energy.meter_details.<meter> unchanged, beside the typed fields above; nothing
    # in llem reads a key of it.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return self.sampling is not None

    def total_j(self, kind: str) -> float | None:
        values = [d.energy_j for d in self.devices if d.kind == kind]
        return sum(values) if values else None

    def meter_details(self) -> dict[str, Any] | None:
        """The result's energy.meter_details.<meter>: the typed facts, then `details`; None when it has none."""
        if self.update_period_s is None and self.sampling is None and self.attribution is None and not self.details:
            return None
        period = {} if self.update_period_s is None else {"update_period_s": self.update_period_s}
        sampling = {} if self.sampling is None else asdict(self.sampling)
        attribution = {} if self.attribution is None else {"attribution": self.attribution.as_dict()}
        return {**period, **sampling, "sampled": self.sampled, **attribution, **self.details}


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
