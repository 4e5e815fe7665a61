"""Validate a result.json document against the schema generated from the types (needs `jsonschema`)."""

from __future__ import annotations

import functools
from typing import Any

from llem.result_schema.generate import json_schema
from llem.result_schema.types import ResultDoc

SCHEMA_ID = "https://github.com/llem/llem/result.schema.json"


class ResultSchemaError(ValueError):
    """A result document does not match the schema: the message lists each mismatch with its path."""


@functools.lru_cache(maxsize=1)
def result_schema() -> dict[str, Any]:
    """The JSON Schema of result.json (the same `python -m llem.results schema` prints)."""
    from llem.result import SCHEMA_VERSION

    schema = json_schema(ResultDoc, schema_id=SCHEMA_ID, title=f"llem result.json {SCHEMA_VERSION}")
    schema["properties"]["schema_version"]["pattern"] = r"^1\.\d+\.\d+$"
    return schema


def validate_result(doc: dict[str, Any]) -> None:
    """Raise ResultSchemaError naming every field that does not match (path: problem)."""
    _check(result_schema(), doc)


@functools.cache
def schema_of(cls: type) -> dict[str, Any]:
    """The JSON Schema of one type of llem.result_schema.types (a block, a requests.jsonl row, ...)."""
    return json_schema(cls)


def validate_as(doc: Any, cls: type) -> None:
    """Check one block or row against its type: `validate_as(block, types.Serving)`."""
    _check(schema_of(cls), doc)


def _check(schema: dict[str, Any], doc: Any) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted((_deepest(e) for e in validator.iter_errors(doc)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message[:300]}" for e in errors[:20]]
        raise ResultSchemaError(f"result does not match the schema ({len(errors)} problem(s)):\n  "
                                + "\n  ".join(lines))


def _deepest(error: Any) -> Any:
    """Of a `Block | Empty` mismatch (anyOf), the sub-error deepest in the document: `workload.prompts: 8.5 is
    not of type 'integer'` rather than `workload: ... is not valid under any of the given schemas`."""
    if not error.context:
        return error
    return max((_deepest(e) for e in error.context), key=lambda e: len(e.absolute_path))
