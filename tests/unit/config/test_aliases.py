"""Renamed keys (llem/config/aliases.py): the old spelling runs as the new one with one warning, a setting
given both ways with different values is refused, and config_hash is the same either way and the same
as before the rename (hashes of d3ab108, the last commit with the flat energy keys)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from conftest import run_llem

from llem.config.aliases import RENAMED, rename_overrides
from llem.config.overrides import field_type, unknown_key
from llem.errors import ConfigError
from llem.study.hashing import config_hash, measured_part

OLD_WAY = ["energy.rapl_root=/x", "energy.country_iso_code=FRA", "energy.codecarbon_measure_power_s=2.5"]
NEW_WAY = ["energy.rapl.root=/x", "energy.codecarbon.country_iso_code=FRA", "energy.codecarbon.measure_power_s=2.5"]


def compose(*overrides: str) -> tuple[Any, dict[str, Any]]:
    """The typed config and the resolved dict of `python -m llem OVERRIDES`, as llem.run composes it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from llem.app import to_experiment
    from llem.search.api import _compose, _overrides

    cfg = _compose(_overrides(list(overrides)), None)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/llem-test-aliases"
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    return to_experiment(cfg)


def rename(*argv: str) -> tuple[list[str], str | None, list[str]]:
    out = io.StringIO()
    args, problem = rename_overrides(list(argv), warn=out)
    return args, problem, out.getvalue().splitlines()


def test_every_old_key_runs_as_its_new_key_with_one_warning_naming_it() -> None:
    for old, new in RENAMED.items():
        assert field_type(new) is not None and field_type(old) is None  # the new key is the schema's
        assert unknown_key(old) == f"'{old}' is now {new}"  # a YAML file with the old key: told the new one
        args, problem, warnings = rename(f"{old}=7", "n=2", f"{old}=7")
        assert problem is None and args == [f"{new}=7", "n=2", f"{new}=7"]
        assert warnings == [f"llem: warning: {old} is now {new} (read {old}=7 as {new}=7)"]  # once per key
    args, problem, warnings = rename("-m", "+energy.rapl_root=/a,/b", "-cd", "energy.rapl_root=/c")
    assert problem is None and args == ["-m", "+energy.rapl.root=/a,/b", "-cd", "energy.rapl_root=/c"]
    assert len(warnings) == 1  # the value of -cd is a folder, not an override: left alone
    assert rename("~energy.rapl_root")[:2] == (["~energy.rapl.root"], None)
    assert rename("energy.rapl.root=/a", "n=2") == (["energy.rapl.root=/a", "n=2"], None, [])


def test_a_value_given_both_ways_must_agree() -> None:
    args, problem, _ = rename("energy.rapl_root=/x", "energy.rapl.root='/x'")
    assert problem is None and args == ["energy.rapl.root='/x'"]  # the same value: the new spelling, once
    args, problem, _ = rename("-m", "energy.codecarbon_measure_power_s=1,2", "energy.codecarbon.measure_power_s=choice(1,2)")
    assert problem is None and args == ["-m", "energy.codecarbon.measure_power_s=choice(1,2)"]
    args, problem, warnings = rename("energy.country_iso_code=FRA", "energy.codecarbon.country_iso_code=DEU")
    assert args == ["energy.country_iso_code=FRA", "energy.codecarbon.country_iso_code=DEU"] and not warnings
    assert problem == ("energy.country_iso_code=FRA and energy.codecarbon.country_iso_code=DEU set the same knob "
                       "with different values ('energy.country_iso_code' is now energy.codecarbon.country_iso_code): "
                       "give it once, as energy.codecarbon.country_iso_code=...")


def test_on_the_command_line_a_conflict_and_a_bad_value_exit_2_with_one_line(tmp_path: Path,
                                                                             llem_cache: Path) -> None:
    p = run_llem(["energy.rapl_root=/a", "energy.rapl.root=/b"], tmp_path, llem_cache, timeout=60)
    assert p.returncode == 2 and p.stderr.splitlines() == [
        "llem: energy.rapl_root=/a and energy.rapl.root=/b set the same knob with different values "
        "('energy.rapl_root' is now energy.rapl.root): give it once, as energy.rapl.root=..."], p.stderr
    p = run_llem(["energy.country_iso_code=usa", "quiet=true"], tmp_path, llem_cache, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.startswith("llem:")]
    assert p.returncode == 2 and lines[0] == ("llem: warning: energy.country_iso_code is now "
                                              "energy.codecarbon.country_iso_code (read energy.country_iso_code=usa "
                                              "as energy.codecarbon.country_iso_code=usa)"), p.stderr
    assert len(lines) == 2 and lines[1].startswith("llem: energy.codecarbon.country_iso_code=usa is invalid: allowed "
                                                   "a 3-letter ISO 3166 code in capitals, e.g. USA, FRA, DEU"), p.stderr
    assert not list(tmp_path.rglob("requests.jsonl"))  # nothing ran


def test_config_hash_is_the_same_either_way_and_as_before_the_nodes() -> None:
    old, new = compose(*OLD_WAY), compose(*NEW_WAY)
    assert old[0].energy.rapl.root == "/x" and old[0].energy.codecarbon.measure_power_s == 2.5
    assert old[1] == new[1]
    # d3ab108's config_hash of the same settings (energy.rapl_root=/x ...), of the defaults, of energy=codecarbon
    assert config_hash(new[1]) == "ccbcb91b9d65672c"
    assert config_hash(compose()[1]) == "301283b9608a5999"
    assert config_hash(compose("energy=codecarbon")[1]) == "a51a6bbc3977775c"
    moved = {**new[1], "energy": {**new[1]["energy"], "rapl": {"root": "/y"}}}
    assert config_hash(moved) != config_hash(new[1])  # the knob is hashed


def test_a_meter_node_at_its_defaults_is_not_hashed() -> None:
    """A new meter with knobs of its own changes no existing hash; a knob set away from its default does."""
    import llem.study.hashing as hashing

    @dataclasses.dataclass
    class MineConfig:
        knob: int = 3

    base = {"backend": "pytorch", "energy": {"meter": "auto", "rapl": {"root": "/r"}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hashing, "METER_NODES", {**hashing.METER_NODES, "mine": MineConfig})
        at_default = {**base, "energy": {**base["energy"], "mine": {"knob": 3}}}
        assert measured_part(at_default)["energy"] == {"meter": "auto", "rapl_root": "/r"}
        assert config_hash(at_default) == config_hash(base)
        changed = {**base, "energy": {**base["energy"], "mine": {"knob": 4}}}
        assert measured_part(changed)["energy"]["mine"] == {"knob": 4}


def test_bad_values_of_the_new_keys_are_refused_before_load_naming_key_value_and_allowed() -> None:
    """In process (the command line's path is the test above): validation, which run_job runs first."""
    from llem.config.schema import BACKENDS, ExperimentConfig
    from llem.config.validate import validate

    for node, knob, value, line in (
            ("codecarbon", "measure_power_s", 0.0, "energy.codecarbon.measure_power_s=0.0 is invalid: allowed a "
             "finite number > 0 (seconds)"),
            ("codecarbon", "measure_power_s", float("inf"), "energy.codecarbon.measure_power_s=inf is invalid"),
            ("codecarbon", "country_iso_code", "FR", "energy.codecarbon.country_iso_code=FR is invalid: allowed a "
             "3-letter ISO 3166 code in capitals"),
            ("rapl", "root", "", "energy.rapl.root='' is invalid: allowed a folder path (the powercap sysfs root"),
            ("rapl", "root", "/x\x00", "energy.rapl.root='/x\\x00' is invalid: allowed a folder path"),
    ):
        cfg = ExperimentConfig(pytorch=BACKENDS["pytorch"].config())
        setattr(getattr(cfg.energy, node), knob, value)
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert str(info.value).startswith(line), (node, knob, value, str(info.value))
