"""Which meters measure a job: `build_meters` turns the `energy` config into probed meters plus a note of
what was picked (`energy=auto` tries nvml, else amdsmi, and rapl; the BMC's node meter beside them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llem.energy.base import Meter, MeterUnavailable, NoMeter

if TYPE_CHECKING:  # annotations only: the schema imports the meter registry below this package
    from llem.config.schema import EnergyConfig

NO_METER = "auto: no supported energy meter on this host (no NVIDIA GPU via NVML, no AMD GPU via amdsmi, no readable RAPL)"


@dataclass
class MeterSelection:
    meters: list[Meter]
    notes: list[str] = field(default_factory=list)  # what auto tried and why it picked what it did


def check_config(cfg: EnergyConfig) -> None:
    """Energy knobs the general validator does not cover; ConfigError names key, value and what is allowed."""
    from llem.errors import ConfigError
    problems: list[tuple[str, Any, str]] = []
    if cfg.gpu_indices is not None and any(not isinstance(i, int) or i < 0 for i in cfg.gpu_indices):
        problems.append(("energy.gpu_indices", list(cfg.gpu_indices), "null or a list of CUDA ordinals >= 0"))
    for key, lo in (("baseline_ttl_s", 0.0), ("thermal_tolerance_c", 0.0)):
        if getattr(cfg, key) < lo:
            problems.append((f"energy.{key}", getattr(cfg, key), f"a number >= {lo:g}"))
    if cfg.thermal_plateau_s <= 0:
        problems.append(("energy.thermal_plateau_s", cfg.thermal_plateau_s, "a number > 0"))
    from llem.energy.meters import meter_problems

    problems.extend(meter_problems(cfg))  # each meter's own knobs (llem/energy/meters/<name>/checks.py)
    from llem.energy.meters.node.config import problems as node_problems

    problems.extend(node_problems(cfg))  # energy.node.* and energy.basis
    if problems:
        raise ConfigError(problems)


def make_meter(name: str, cfg: EnergyConfig) -> Meter:
    """One meter by name from the registry (llem/energy/meters); heavy imports (pynvml, zeus, codecarbon)
    happen in its `probe`."""
    from llem.energy.meters import CHOICES, METERS, meter_class

    if name not in METERS:
        raise ValueError(f"energy.meter={name!r} is invalid: allowed {', '.join(CHOICES)}")
    return meter_class(name).from_config(cfg)


def build_meters(cfg: EnergyConfig) -> MeterSelection:
    """Meters for one job, probed (before the model loads). `auto`: nvml if an NVIDIA GPU answers (else
    amdsmi if an AMD GPU does), and rapl if its counters are readable — both when both are, reported
    separately — else none. A meter named explicitly that cannot measure raises MeterUnavailable saying
    why and how to fix it. `energy.node.source` adds the BMC's node meter beside whatever was picked
    (llem.energy.meters.node)."""
    check_config(cfg)
    from llem.energy.meters.node.select import add_node_meter

    return add_node_meter(_pick_meters(cfg), cfg)


def _pick_meters(cfg: EnergyConfig) -> MeterSelection:
    if cfg.meter == "none":
        return MeterSelection([NoMeter(cfg.reason or "disabled by configuration (energy=none)")])
    if cfg.meter != "auto":
        meter = make_meter(cfg.meter, cfg)
        try:
            meter.probe()
        except MeterUnavailable as e:
            meter.close()
            raise MeterUnavailable(f"energy.meter={cfg.meter}: {e}") from e
        return MeterSelection([meter], [f"{cfg.meter}: chosen by configuration: {meter.describe()}"])
    meters: list[Meter] = []
    notes: list[str] = []
    for name, wanted, off in (("nvml", cfg.gpu, "energy.gpu=false"), ("amdsmi", cfg.gpu, "energy.gpu=false"),
                              ("rapl", cfg.cpu, "energy.cpu=false")):
        if not wanted:
            notes.append(f"{name}: not tried ({off})")
            continue
        if name == "amdsmi" and any(m.name == "nvml" for m in meters):
            continue  # NVML measures this host's GPUs: amdsmi is for hosts without them
        meter = make_meter(name, cfg)
        try:
            meter.probe()
        except MeterUnavailable as e:
            meter.close()
            notes.append(f"{name}: unavailable: {e}")
            continue
        meters.append(meter)
        notes.append(f"{name}: picked: {meter.describe()}")
    if not meters:
        return MeterSelection([NoMeter(NO_METER)], [*notes, NO_METER])
    both = " (GPU and CPU energy reported separately, never summed into the GPU figures)" if len(meters) > 1 else ""
    notes.append("auto picked " + " + ".join(m.name for m in meters) + both)
    return MeterSelection(meters, notes)
