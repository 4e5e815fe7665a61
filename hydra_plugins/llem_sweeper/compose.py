"""Composing every config of a sweep fast, with the result Hydra's own per-job compose gives.

Hydra composes each job from scratch (~60–90 ms: defaults list, YAML loads, schema merge). Only
group overrides (`model=...`, `+experiment=...`) change the defaults list; every other override is
applied afterwards to the composed config by `ConfigLoaderImpl._apply_overrides_to_config`, in order.
So: compose once per distinct set of group overrides with Hydra's loader, then for each job copy that
config and apply the job's key overrides with that same Hydra function (~2 ms). tests/test_sweeper.py
checks the result equals a full compose, `+`/`++` keys and group overrides included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, Node, OmegaConf, open_dict

from llem.config.schema import BACKENDS
from llem.config.validate import ConfigError, problems
from llem.study.hashing import config_hash
from llem.study.plan import Candidate
from llem.study.scope import SweepKey

RESERVED = ("study", "study_job")  # study settings are not swept; study_job is the sweeper's to set


def sweep_keys(overrides: Sequence[Override]) -> list[SweepKey]:
    """The sweep's keys with their values, exactly as BasicSweeper.split_arguments collects them
    (a later override of the same key replaces the values but keeps the first position)."""
    final: dict[str, SweepKey] = {}
    for o in overrides:
        key = o.get_key_element()
        head = o.key_or_group.split(".", 1)[0]
        if head == "study_job":
            raise HydraException(f"{o.input_line}: study_job.* is set by llem's sweeper for every job")
        if o.is_sweep_override():
            if head == "study":
                raise HydraException(f"{o.input_line}: study.* settings cannot be swept (one value per study)")
            if not o.is_discrete_sweep():
                assert o.value_type is not None
                raise HydraException(f"llem's sweeper does not support sweep type: {o.value_type.name} "
                                     f"({o.input_line}); use a,b,c, range(), choice() or glob()")
            final[key] = SweepKey(key, o.key_or_group, tuple(o.sweep_string_iterator()))
        else:
            final[key] = SweepKey(key, o.key_or_group, (o.get_value_element_as_str(),))
    return list(final.values())


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        msg += f": {str(cause).strip().splitlines()[0]}"
    return msg


class FastComposer:
    """Per-job configs of one sweep (without the `hydra` node), each equal to Hydra's compose."""

    def __init__(self, config_loader: ConfigLoader, master_config: DictConfig) -> None:
        self.loader = config_loader
        self.master = master_config
        self.parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}
        self._is_group: dict[str, bool] = {}
        self._bases: dict[tuple[str, ...], DictConfig | Exception] = {}
        self.composes = 0  # full Hydra composes done (one per distinct group-override set)

    def _parse(self, line: str) -> Override:
        if line not in self._parsed:
            self._parsed[line] = self.parser.parse_override(line)
        return self._parsed[line]

    def _group(self, o: Override) -> bool:
        """As hydra._internal.defaults_list.Overrides: a group override changes the defaults list."""
        name = o.key_or_group
        if name not in self._is_group:
            self._is_group[name] = bool(self.loader.repository.group_exists(name))  # type: ignore[attr-defined]
        return self._is_group[name] and not isinstance(o.value(), dict)

    def _base(self, group_lines: tuple[str, ...]) -> DictConfig:
        if group_lines not in self._bases:
            try:
                cfg = self.loader.load_sweep_config(self.master, list(group_lines))
                self.composes += 1
                with open_dict(cfg):
                    del cfg["hydra"]
                self._bases[group_lines] = cfg
            except Exception as e:  # a missing group option, a bad experiment file, ...
                self._bases[group_lines] = e
        base = self._bases[group_lines]
        if isinstance(base, Exception):
            raise base
        return base

    def _split(self, overrides: Sequence[str]) -> tuple[tuple[str, ...], list[Override]]:
        parsed = [self._parse(line) for line in overrides]
        groups = tuple(o.input_line for o in parsed if self._group(o))  # type: ignore[misc]
        return groups, [o for o in parsed if not self._group(o)]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config (without `hydra`) as an independent copy."""
        groups, key_overrides = self._split(overrides)
        cfg = copy.deepcopy(self._base(groups))
        ConfigLoaderImpl._apply_overrides_to_config(key_overrides, cfg)
        return cfg

    @contextmanager
    def composed(self, overrides: Sequence[str]) -> Iterator[DictConfig]:
        """The job's config, valid only inside the block (fast path, no full copy).

        The shared base config takes the job's key overrides in place, on private copies of the
        nodes they set; on exit every container on their paths gets its original children back.
        Nothing else changes, so interpolations resolve exactly as in the job's own compose.
        """
        groups, key_overrides = self._split(overrides)
        base = self._base(groups)
        saved: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        try:
            for o in key_overrides:
                saved += _isolate(base, o.key_or_group.split("."))
            ConfigLoaderImpl._apply_overrides_to_config(key_overrides, base)
            yield base
        finally:
            for content, original in reversed(saved):
                content.clear()
                content.update(original)

    def candidate(self, overrides: Sequence[str]) -> Candidate:
        """Compose, convert to the typed schema, validate and hash one config; never raises."""
        try:
            with self.composed(overrides) as cfg:
                resolved: Any = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
                typed = OmegaConf.to_object(cfg)
        except Exception as e:
            return Candidate(list(overrides), None, [f"cannot compose: {_message(e)}"])
        found = problems(typed)  # type: ignore[arg-type]
        reasons = str(ConfigError(found)).splitlines() if found else []
        backend = resolved.get("backend")
        return Candidate(list(overrides), config_hash(resolved), reasons,
                         backend if backend in BACKENDS else None)


def _isolate(root: DictConfig, path: list[str]) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
    """Make the node at `path` private before an override sets it: snapshot the children of every
    container on the way (keys added or deleted are undone from these) and swap the target — or the
    first non-dict container on the way, e.g. a null section or a list — for a private copy."""
    saved = []
    node: Node = root
    for i, part in enumerate(path):
        content = node.__dict__["_content"]
        if not isinstance(content, dict):
            break
        saved.append((content, dict(content)))
        child = content.get(part)
        if child is None:
            break  # a key the override adds: the snapshot removes it again
        if i == len(path) - 1 or not isinstance(child.__dict__.get("_content"), dict):
            content[part] = _private_copy(child)
            break
        node = child
    return saved


def _private_copy(node: Node) -> Node:
    """Deep copy of one child under the same parent (OmegaConf's own DictConfig.__deepcopy__ pattern)."""
    parent = node.__dict__["_parent"]
    node.__dict__["_parent"] = None
    try:
        clone = copy.deepcopy(node)
    finally:
        node.__dict__["_parent"] = parent
    clone.__dict__["_parent"] = parent
    return clone
