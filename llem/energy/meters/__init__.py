"""The meter registry: the ONE place an energy meter is declared (`energy.meter=<name>`), one folder each.

A meter is a `llem.energy.base.Meter` subclass in `llem/energy/meters/<name>/meter.py` with a
`from_config(energy_cfg)` classmethod. A meter with knobs of its own has them in a dataclass in
`config.py` beside it: the registry line carries the class, and `EnergyConfig` gets the node
`energy.<name>.*` from it (llem/config/schema.py), so the defaults are written once. Its checks are a
`problems(energy_cfg)` function in `checks.py` returning (key, value, allowed) triples. Pure: nothing
here imports a vendor library (the meter's `probe` does), nor llem.config (the schema imports this).
The node meter (`energy.node.*`, the BMC) runs beside whatever was picked and is not selectable here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llem.energy.meters.codecarbon.config import CodeCarbonConfig
from llem.energy.meters.rapl.config import RaplConfig


@dataclass(frozen=True)
class MeterSpec:
    target: str  # "module:Class" of the Meter
    checks: str | None = None  # "module:function": energy cfg -> [(key, value, allowed)]
    config: type | None = None  # its knob dataclass: the node energy.<name>.* (None: no knobs of its own)


METERS: dict[str, MeterSpec] = {
    "nvml": MeterSpec("llem.energy.meters.nvml.meter:NvmlMeter"),
    "amdsmi": MeterSpec("llem.energy.meters.amdsmi.meter:AmdsmiMeter"),
    "rapl": MeterSpec("llem.energy.meters.rapl.meter:RaplMeter", "llem.energy.meters.rapl.checks:problems",
                      RaplConfig),
    "zeus": MeterSpec("llem.energy.meters.zeus.meter:ZeusMeter"),
    "codecarbon": MeterSpec("llem.energy.meters.codecarbon.meter:CodeCarbonMeter",
                            "llem.energy.meters.codecarbon.checks:problems", CodeCarbonConfig),
}
CHOICES = ("auto", "none", *METERS)  # what energy.meter accepts


def _import(path: str) -> Any:
    from llem.config.schema import import_target  # here, not above: the schema imports this registry

    return import_target(path)


def meter_class(name: str) -> Any:
    return _import(METERS[name].target)


def meter_problems(cfg: Any) -> list[tuple[str, Any, str]]:
    """Every registered meter's knob checks (all of them: a bad knob fails even when its meter is not picked)."""
    out: list[tuple[str, Any, str]] = []
    for spec in METERS.values():
        if spec.checks:
            out.extend(_import(spec.checks)(cfg))
    return out
