"""Typed objects from result JSON and back, exactly: `to_json(parse(doc, ResultDoc)) == doc`.

`parse` builds the dataclasses of llem.result_schema.types from a document (a `Block | Empty` union
picks Empty for `{}`); keys an open block has beyond its fields are kept in the object's `extra`
dict (`obj.extra_keys`), so nothing is lost, and `to_json` writes them back in their place. A key a
closed block does not know, or a required key missing, raises ValueError (validate first for a message naming every problem).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")
_EXTRA = "_extra_keys"  # where an open block's other keys live on the object (not a field)


def _hints(cls: type) -> dict[str, Any]:
    cache = _hints.__dict__.setdefault("cache", {})
    if cls not in cache:
        cache[cls] = typing.get_type_hints(cls)
    return cache[cls]


def _fits(value: Any, tp: Any) -> bool:
    """Loosely: could `value` be a `tp`? (picks the branch of a union)"""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return False
        names = {f.name for f in dataclasses.fields(tp)}
        required = {f.name for f in dataclasses.fields(tp)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}  # type: ignore[misc]
        return required <= set(value) and (getattr(tp, "OPEN", False) or set(value) <= names)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool):
        return isinstance(value, tp)
    return True


def _convert(value: Any, tp: Any) -> Any:
    if value is None or tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse(value, tp)  # type: ignore[arg-type]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for branch in args:
            if _fits(value, branch):
                return _convert(value, branch)
        return value
    if origin is list and args and isinstance(value, list):
        return [_convert(v, args[0]) for v in value]
    if origin is dict and args and isinstance(value, dict):
        return {k: _convert(v, args[1]) for k, v in value.items()}
    return value


def parse(doc: dict[str, Any], cls: type[T]) -> T:
    """The typed object of JSON object `doc` (a result, a block, a requests.jsonl row)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in doc if k not in fields]
    if unknown and not getattr(cls, "OPEN", False):
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}")
    missing = [name for name, f in fields.items() if name not in doc and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ValueError(f"{cls.__name__}: missing required key(s) {missing}")
    obj = cls(**{k: _convert(v, hints[k]) for k, v in doc.items() if k in fields})
    order = list(doc)
    object.__setattr__(obj, _EXTRA, ({k: doc[k] for k in unknown}, order))
    return obj


def extra_keys(obj: Any) -> dict[str, Any]:
    """An open block's keys beyond its fields, as read."""
    return getattr(obj, _EXTRA, ({}, None))[0]


def to_json(obj: Any) -> Any:
    """The JSON value of a typed object: fields as read (absent optional ones stay absent), in the order
    read; other keys of an open block in their place. Objects built in code give every field."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        extra, order = getattr(obj, _EXTRA, ({}, None))
        values = {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        values.update(extra)
        if order is None:
            return values
        return {k: values[k] for k in order}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj
