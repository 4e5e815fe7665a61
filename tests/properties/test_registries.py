"""The extension registries (backends, meters, datasets) and config defaults written once."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llem.config.schema import BACKENDS, DatasetConfig, EnergyConfig, ExperimentConfig
from llem.config.validate import problems
from llem.datasets import DATASETS, Dataset, DatasetError, dataset, load_prompts, needs_tokenizer
from llem.energy import check_config, make_meter
from llem.energy.base import Meter
from llem.energy.meters import CHOICES, METERS, meter_class
from llem.energy.meters.codecarbon.config import CodeCarbonConfig
from llem.energy.meters.rapl.config import RaplConfig
from llem.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
IDENTITY = {"backend", "name", "meter", "id"}  # the keys that say which preset a file is


def test_every_backend_target_imports_from_its_folder() -> None:
    from llem.config.schema import import_target

    for name, spec in BACKENDS.items():
        assert spec.config.__module__ == f"llem.backends.{name}.config"
        for target in (spec.checks, spec.preflight):
            if target:
                assert target.startswith(f"llem.backends.{name}.") and callable(import_target(target))
    assert BACKENDS["pytorch"].preflight  # pytorch.device=cuda on a host without one: refused before load


def test_every_meter_is_one_registry_line_with_a_class_built_from_the_energy_config() -> None:
    assert ("auto", "none", *METERS) == CHOICES
    for name in METERS:
        cls = meter_class(name)
        assert issubclass(cls, Meter) and cls.__module__ == f"llem.energy.meters.{name}.meter"
        meter = make_meter(name, EnergyConfig(sample_hz=7.0, gpu_indices=[1], rapl=RaplConfig("/x")))
        assert type(meter) is cls and meter.name == name  # constructing probes nothing


def test_meter_knobs_reach_the_meter() -> None:
    cfg = EnergyConfig(sample_hz=7.0, gpu_indices=[1], rapl=RaplConfig("/somewhere"))
    rapl = make_meter("rapl", cfg)
    assert (rapl.root, rapl.sample_hz) == ("/somewhere", 7.0)
    for name in ("nvml", "amdsmi"):
        m = make_meter(name, cfg)
        assert (m.sample_hz, m.gpu_indices) == (7.0, [1])
    assert make_meter("zeus", cfg).gpu_indices == [1]
    cc = make_meter("codecarbon", EnergyConfig(codecarbon=CodeCarbonConfig("FRA", 3.0)))
    assert (cc.country, cc.measure_power_s, cc.gpu_indices) == ("FRA", 3.0, None)


def test_unknown_meter_and_a_meter_check_fail_naming_the_key() -> None:
    with pytest.raises(ValueError, match="energy.meter='nope' is invalid: allowed auto, none, nvml"):
        make_meter("nope", EnergyConfig())
    with pytest.raises(ConfigError, match=r"energy.codecarbon.measure_power_s=0.0 is invalid: allowed a finite number > 0"):
        check_config(EnergyConfig(codecarbon=CodeCarbonConfig(measure_power_s=0.0)))
    check_config(EnergyConfig(codecarbon=CodeCarbonConfig(measure_power_s=0.001)))
    bad = problems(ExperimentConfig(pytorch=BACKENDS["pytorch"].config(), energy=EnergyConfig(meter="nope")))
    assert bad == [("energy.meter", "nope", "one of " + ", ".join(CHOICES))] or bad[0][:2] == ("energy.meter", "nope")


def test_every_dataset_is_one_registry_line_and_its_checks_run_before_any_model() -> None:
    for name in DATASETS:
        d = dataset(name)
        assert isinstance(d, Dataset) and d.name == name
    assert needs_tokenizer(DatasetConfig(name="synthetic")) and not needs_tokenizer(DatasetConfig(name="jsonl"))
    with pytest.raises(DatasetError, match="dataset.name='nope': allowed synthetic, aienergyscore, jsonl, csv, hf"):
        load_prompts(DatasetConfig(name="nope"), 1, 0)
    cfg = ExperimentConfig(pytorch=BACKENDS["pytorch"].config(), dataset=DatasetConfig(name="csv", path=None))
    assert ("dataset.path", None, "a csv file path (dataset=csv reads a local file)") in problems(cfg)
    cfg.dataset = DatasetConfig(name="hf")
    assert ("dataset.hub_id", None, "a Hub dataset id such as tatsu-lab/alpaca") in problems(cfg)
    cfg.dataset = DatasetConfig(name="aienergyscore")  # from the Hub: no file needed
    assert not [p for p in problems(cfg) if p[0].startswith("dataset.")]


def test_a_file_dataset_shuffles_with_the_seed_and_takes_n(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text("".join(f'{{"prompt": "p{i}"}}\n' for i in range(10)))
    cfg = DatasetConfig(name="jsonl", path=str(f))
    assert load_prompts(cfg, 3, 0) == ["p0", "p1", "p2"]
    cfg.shuffle = True
    a, b = load_prompts(cfg, 10, 1), load_prompts(cfg, 10, 2)
    assert sorted(a) == sorted(b) == sorted(f"p{i}" for i in range(10)) and a != b and a == load_prompts(cfg, 10, 1)
    with pytest.raises(DatasetError, match="n=11 but the dataset has only 10 prompts"):
        load_prompts(cfg, 11, 0)


def _leaves(node: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _leaves(v, (*path, str(k)))] or [(path, node)]
    return [(path, node)]


@pytest.mark.parametrize("group", ["backend", "dataset", "energy", "scenario", "tracking", "model"])
def test_yaml_presets_do_not_repeat_the_dataclass_defaults(group: str) -> None:
    """Defaults are written once, in the dataclasses (Hydra's ConfigStore supplies them): a group file
    sets only what differs, so a default changed in the dataclass is the default everywhere."""
    root = OmegaConf.structured(ExperimentConfig)
    for name, spec in BACKENDS.items():
        root[name] = OmegaConf.structured(spec.config)
    for f in sorted((REPO / "conf" / group).glob("*.yaml")):
        text = f.read_text()
        y = OmegaConf.to_container(OmegaConf.load(f), resolve=False)
        prefix = () if "@package _global_" in text else (group,)
        for path, value in _leaves(y):
            if path[-1] in IDENTITY or path[0] == "hydra" or value == "???":
                continue
            default = OmegaConf.select(root, ".".join(prefix + path), default="<none>")
            default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
            default = getattr(default, "value", default)
            assert value != default or (value == {} and len(path) == 1 and path[0] in BACKENDS), (
                f"{f.relative_to(REPO)}: {'.'.join(path)}: {value!r} repeats the dataclass default")
