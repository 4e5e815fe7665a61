"""The typed result schema: dataclasses for every block of `result.json` (and requests.jsonl rows,
timeseries rows, the study manifest and plan), and the JSON Schema generated from them.

Pure (no torch, pandas or hydra): a reader validates a file with `validate(doc)`, tools outside Python
use `python -m llem.results schema`. The JSON on disk is unchanged: field names are the keys written.
"""

from llem.result_schema.generate import json_schema
from llem.result_schema.types import (
    LatencyStats,
    ManifestDoc,
    PlanDoc,
    RequestRow,
    ResultDoc,
    TimeseriesRow,
)
from llem.result_schema.validate import (
    ResultSchemaError,
    result_schema,
    schema_of,
    validate_as,
    validate_result,
)

__all__ = ["json_schema", "ResultDoc", "LatencyStats", "RequestRow", "TimeseriesRow", "ManifestDoc", "PlanDoc",
           "result_schema", "validate_result", "ResultSchemaError",
           "schema_of", "validate_as"]
