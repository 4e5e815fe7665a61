"""Composing every config of a sweep fast, with the result Hydra's own per-job compose gives.

Hydra composes each job from scratch (~60–90 ms: defaults list, YAML loads, schema merge). Only
group overrides (`model=...`, `+experiment=...`) change the defaults list; every other override is
applied afterwards to the composed config by `ConfigLoaderImpl._apply_overrides_to_config`, in order.
So: compose once per distinct set of group overrides with Hydra's loader, then for each job copy that
config and apply the job's key overrides with that same Hydra function. tests/e2e/test_sweeper.py
checks the result equals a full compose, `+`/`++` keys and group overrides included.

Turning a job's config into plain values is the other cost (OmegaConf walks every node). Top-level
sections that no override of the job touches and that hold no interpolation resolve the same for
every job of a base: they are resolved once per base and reused. The typed schema object validation
needs is built from those plain values (`to_typed`), not by a second OmegaConf walk.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import Container, DictConfig, ListConfig, Node, OmegaConf, ValueNode, open_dict

from llem.config.schema import BACKENDS, ExperimentConfig
from llem.config.validate import ConfigError, problems
from llem.extras import check_config as require_extras
from llem.study.hashing import config_hash
from llem.study.plan import Candidate, StudyError
from llem.study.scope import SweepKey

RESERVED = ("study", "study_job")  # study settings are not swept; study_job is the sweeper's to set


def sweep_keys(overrides: Sequence[Override]) -> list[SweepKey]:
    """The sweep's keys with their values, exactly as BasicSweeper.split_arguments collects them
    (a later override of the same key replaces the values but keeps the first position).
    A key llem's sweeper cannot sweep is a StudyError (one line naming it, exit 2)."""
    final: dict[str, SweepKey] = {}
    for o in overrides:
        key = o.get_key_element()
        head = o.key_or_group.split(".", 1)[0]
        if head == "study_job":
            raise StudyError(f"{o.input_line} is refused: study_job.* is set by llem's sweeper for every job "
                             "(its cycle, hashes and index); allowed: leave study_job.* out")
        if o.is_sweep_override():
            if head == "study":
                raise StudyError(f"{o.input_line} is refused: study.* settings cannot be swept; allowed: one value "
                                 f"per study (e.g. {o.key_or_group}=<value>), a separate study per value")
            if not o.is_discrete_sweep():
                assert o.value_type is not None
                raise StudyError(f"{o.input_line} is refused: llem's sweeper does not support sweep type "
                                 f"{o.value_type.name}; allowed: a,b,c, range(), choice() or glob()")
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
        self._static: dict[tuple[str, ...], dict[str, Any]] = {}  # per base: resolved interpolation-free sections
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
                self._static[group_lines] = {k: _resolve_key(cfg, k) for k in cfg if _static(cfg._get_node(k))}
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
        values: list[tuple[ValueNode, Any]] = []
        try:
            for o in key_overrides:
                saved += _isolate(base, o.key_or_group.split("."), values)
            ConfigLoaderImpl._apply_overrides_to_config(key_overrides, base)
            yield base
        finally:
            for node, value in reversed(values):
                node.__dict__["_val"] = value
            for content, original in reversed(saved):
                content.clear()
                content.update(original)

    def resolved(self, overrides: Sequence[str]) -> dict[str, Any]:
        """The job's config as plain values (= OmegaConf.to_container(resolve=True, enum_to_str=True)
        of its full compose); sections shared with the base are shared objects: read only."""
        groups, key_overrides = self._split(overrides)
        touched = {o.key_or_group.split(".", 1)[0] for o in key_overrides}
        with self.composed(overrides) as cfg:
            static = self._static[groups]
            return {k: static[k] if k in static and k not in touched else _resolve_key(cfg, k) for k in cfg}

    def candidate(self, overrides: Sequence[str]) -> Candidate:
        """Compose, convert to the typed schema, validate and hash one config; never raises."""
        try:
            resolved: Any = self.resolved(overrides)
            typed = to_typed(ExperimentConfig, resolved)
        except Exception as e:
            return Candidate(list(overrides), None, [f"cannot compose: {_message(e)}"])
        require_extras(typed)  # a missing optional package stops the study here (exit 2), before any job
        found = problems(typed)  # type: ignore[arg-type]
        reasons = str(ConfigError(found)).splitlines() if found else []
        backend = resolved.get("backend")
        return Candidate(list(overrides), config_hash(resolved), reasons,
                         backend if backend in BACKENDS else None, resolved.get("gpu"))


def _isolate(root: DictConfig, path: list[str], values: list[tuple[ValueNode, Any]]
             ) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
    """Make the node at `path` private before an override sets it: snapshot the children of every
    container on the way (keys added or deleted are undone from these) and swap the target — or the
    first non-dict container on the way, e.g. a null section or a list — for a private copy. A value
    node (the usual target) is set in place by OmegaConf (`_val` only): its value is noted in
    `values` to be put back, which is much cheaper than copying the node."""
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
        if i == len(path) - 1 and isinstance(child, ValueNode):
            values.append((child, child.__dict__["_val"]))
            break
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


def _static(node: Node) -> bool:
    """No interpolation and no missing value anywhere below: resolves the same in every job."""
    if node._is_interpolation() or node._is_missing():
        return False
    if isinstance(node, DictConfig) and not node._is_none():
        return all(_static(node._get_node(k)) for k in node)  # type: ignore[arg-type]
    if isinstance(node, ListConfig) and not node._is_none():
        return all(_static(node._get_node(i)) for i in range(len(node)))  # type: ignore[arg-type]
    return True


def _resolve_key(cfg: DictConfig, key: Any) -> Any:
    """One top-level entry as OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) gives it."""
    value = cfg[key]
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value.name if isinstance(value, Enum) else value


def to_typed(cls: type, data: Any) -> Any:
    """The schema dataclass for plain resolved values, as OmegaConf.to_object builds it (values are
    already of their field's type: OmegaConf converted them when the overrides were applied)."""
    return _converter(cls)(data)


@functools.cache
def _converter(tp: Any) -> Any:
    """A function plain value -> typed value for one annotation (built once per type)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _converter(inner[0]) if len(inner) == 1 else _same
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [(f.name, _converter(hints[f.name])) for f in dataclasses.fields(tp)]

        def dataclass_of(data: Any) -> Any:
            if data is None:
                return None
            if not isinstance(data, dict):
                raise ValueError(f"{tp.__name__}: expected a mapping, got {data!r}")
            return tp(**{name: conv(data[name]) for name, conv in fields if name in data})
        return dataclass_of
    if isinstance(tp, type) and issubclass(tp, Enum):
        return lambda v: None if v is None else tp[v] if isinstance(v, str) else tp(v)
    args = typing.get_args(tp)
    if origin is list and args:
        item = _converter(args[0])
        return lambda v: None if v is None else [item(x) for x in v]
    if origin is dict and len(args) == 2:
        val = _converter(args[1])
        return lambda v: None if v is None else {k: val(x) for k, x in v.items()}
    return _same


def _same(value: Any) -> Any:
    return value
