"""The meter registry: the ONE place an energy meter is declared (`energy.meter=<name>`), one folder each.

A meter is a `llem.energy.base.Meter` subclass in `llem/energy/meters/<name>/meter.py` with a
`from_config(energy_cfg)` classmethod; its knob checks, if any, are a `problems(energy_cfg)` function
returning (key, value, allowed) triples. Pure: nothing here imports a vendor library (the meter's `probe` does).
The node meter (`energy.node.*`, the BMC) runs beside whatever was picked and is not selectable here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llem.config.schema import import_target


@dataclass(frozen=True)
class MeterSpec:
    target: str  # "module:Class" of the Meter
    checks: str | None = None  # "module:function": energy cfg -> [(key, value, allowed)]


METERS: dict[str, MeterSpec] = {
    "nvml": MeterSpec("llem.energy.meters.nvml.meter:NvmlMeter"),
    "amdsmi": MeterSpec("llem.energy.meters.amdsmi.meter:AmdsmiMeter"),
    "rapl": MeterSpec("llem.energy.meters.rapl.meter:RaplMeter"),
    "zeus": MeterSpec("llem.energy.meters.zeus.meter:ZeusMeter"),
    "codecarbon": MeterSpec("llem.energy.meters.codecarbon.meter:CodeCarbonMeter",
                            checks="llem.energy.meters.codecarbon.checks:problems"),
}
CHOICES = ("auto", "none", *METERS)  # what energy.meter accepts


def meter_class(name: str) -> Any:
    return import_target(METERS[name].target)


def meter_problems(cfg: Any) -> list[tuple[str, Any, str]]:
    """Every registered meter's knob checks (all of them: a bad knob fails even when its meter is not picked)."""
    out: list[tuple[str, Any, str]] = []
    for spec in METERS.values():
        if spec.checks:
            out.extend(import_target(spec.checks)(cfg))
    return out
