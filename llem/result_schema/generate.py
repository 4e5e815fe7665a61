"""JSON Schema (draft 2020-12) from dataclasses and their type hints; no third-party code.

Rules: a field without a default is `required`; `X | None` allows null; `list[X]`, `dict[str, X]`,
`Literal[...]`, `Any` (anything) and nested dataclasses (`$defs` + `$ref`) map one to one. A class whose
`OPEN` class attribute is true allows keys beyond its fields (additionalProperties), else they are refused.
A field's comment for the docs is `field(metadata={"doc": ...})`; a class's docstring is its description.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: recursive types
            defs[name] = _class_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_type_schema(a, defs) for a in args]
        simple = [p["type"] for p in parts if set(p) == {"type"} and isinstance(p["type"], str)]
        if len(simple) == len(parts):
            return {"type": simple}
        return {"anyOf": parts}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [_type_schema(a, defs) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", **({"items": _type_schema(args[0], defs)} if args else {})}
    if origin is dict or tp is dict:
        return {"type": "object", **({"additionalProperties": _type_schema(args[1], defs)} if args else {})}
    raise TypeError(f"no JSON Schema for type {tp!r}")


def _class_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("skip"):
            continue
        sch = dict(_type_schema(hints[f.name], defs))
        doc = f.metadata.get("doc")
        if doc:
            sch["description"] = doc
        props[f.name] = sch
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            required.append(f.name)
    out: dict[str, Any] = {"type": "object"}
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(f"{cls.__name__}("):
        out["description"] = " ".join(doc.split())
    out["properties"] = props
    if required:
        out["required"] = required
    out["additionalProperties"] = bool(getattr(cls, "OPEN", False))
    return out


def json_schema(cls: type, *, schema_id: str | None = None, title: str | None = None) -> dict[str, Any]:
    """The JSON Schema of dataclass `cls` with every nested dataclass under `$defs`."""
    defs: dict[str, Any] = {}
    root = _class_schema(cls, defs)
    out: dict[str, Any] = {"$schema": DIALECT}
    if schema_id:
        out["$id"] = schema_id
    out["title"] = title or cls.__name__
    out.update(root)
    if defs:
        out["$defs"] = dict(sorted(defs.items()))
    return out


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every documented field as a dotted path (`energy.baseline`, `latency.ttft_s.p50`), for the docs test."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        out.append(name)
        for inner in _dataclasses_in(hints[f.name]):
            if inner.__name__ != "LatencyStats" and not getattr(inner, "NO_PATHS", False):
                out.extend(field_paths(inner, name + "."))
    return out


def _dataclasses_in(tp: Any) -> list[type]:
    if dataclasses.is_dataclass(tp):
        return [tp]  # type: ignore[list-item]
    found: list[type] = []
    for a in typing.get_args(tp):
        for c in _dataclasses_in(a):
            if c not in found:
                found.append(c)
    return found


def type_name(tp: Any) -> str:
    """A type as the docs show it: `number | null`, `list[string]`, `LatencyStats`."""
    if tp is Any:
        return "any"
    if tp in _SCALARS:
        return _SCALARS[tp]
    if dataclasses.is_dataclass(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"object[string → {type_name(args[1])}]" if args else "object"
    return str(tp)


def markdown(roots: list[type]) -> str:
    """One table per dataclass reachable from `roots` (in first-seen order): field, type, required, note."""
    seen: list[type] = []

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for inner in _dataclasses_in(hints[f.name]):
                walk(inner)

    for root in roots:
        walk(root)
    out: list[str] = []
    for cls in seen:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        out.append(f"### {cls.__name__}\n")
        doc = " ".join((cls.__doc__ or "").split())
        if doc and not doc.startswith(f"{cls.__name__}("):
            out.append(doc + "\n")
        out.append("Other keys allowed (open)." if getattr(cls, "OPEN", False) else "No other keys allowed.")
        out.append("")
        if not fields:
            out.append("No keys: `{}`.\n")
            continue
        out.append("| key | type | required | note |\n| --- | --- | --- | --- |")
        for f in fields:
            req = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
            note = str(f.metadata.get("doc", "")).replace("|", "\\|")
            out.append(f"| `{f.name}` | {type_name(hints[f.name])} | {'yes' if req else ''} | {note} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
