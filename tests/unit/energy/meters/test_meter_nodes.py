"""Each meter's own knobs: one dataclass in its folder's config.py, carried by its registry line, a node
`energy.<meter>.*` of EnergyConfig built from it, checks beside it, documented and shown in its preset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llem.config.schema import METER_NODES, EnergyConfig
from llem.energy.meters import METERS, meter_problems
from llem.energy.meters.codecarbon.config import CodeCarbonConfig
from llem.energy.meters.rapl.config import RaplConfig

REPO = Path(__file__).resolve().parents[4]


def test_every_meter_node_comes_from_its_registry_line() -> None:
    assert {"rapl": RaplConfig, "codecarbon": CodeCarbonConfig} == METER_NODES  # nvml/amdsmi/zeus: no knobs of their own
    fields = {f.name: f for f in dataclasses.fields(EnergyConfig)}
    for name, spec in METERS.items():
        if spec.config is None:
            assert name not in fields
            continue
        assert spec.config.__module__ == f"llem.energy.meters.{name}.config"
        assert spec.checks == f"llem.energy.meters.{name}.checks:problems"
        assert fields[name].type is spec.config and getattr(EnergyConfig(), name) == spec.config()
    assert not {"rapl_root", "country_iso_code", "codecarbon_measure_power_s"} & set(fields)  # no flat meter knobs
    assert meter_problems(EnergyConfig()) == []  # the defaults pass their own checks


def test_every_meter_knob_is_documented_and_shown_in_its_preset() -> None:
    docs = (REPO / "docs" / "energy.md").read_text()
    for name, cls in METER_NODES.items():
        preset = (REPO / "conf" / "energy" / f"{name}.yaml").read_text()
        for f in dataclasses.fields(cls):
            assert f"`energy.{name}.{f.name}`" in docs, f"energy.{name}.{f.name} is not in docs/energy.md"
            assert f"#   {f.name}: {getattr(cls(), f.name)}" in preset, (name, f.name)
