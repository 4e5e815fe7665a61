"""`study.objective`: the result fields a job returns to Hydra, for sweepers that optimize a return value.

    study.objective=throughput.output_tok_s:max
    study.objective=[energy.j_per_output_token:min,latency.ttft_s.p90:min]

Each item is `<result field>:<min|max>`; the field is a dotted path into result.json whose value is a
number (checked against the schema, llem/results/example.py, before anything runs). With one
objective the job returns a float, with several a list, in the order given (as Optuna's
`hydra.sweeper.direction` list must be).

A job whose figure is missing (energy not measured, the job failed, a latency with no samples) is a
failed trial. hydra-optuna-sweeper (1.2, `_impl.py`, `sweep`) reads each `JobReturn.return_value`, which
raises the job's exception when its status is FAILED; it then tells Optuna the trial FAILED (values
None) and counts it against `hydra.sweeper.max_failure_rate` (Optuna's default 0.0: the first failed
trial stops the whole search; 1.0: failed trials are recorded and the search goes on). A NaN return is
no way out: with the optuna<3 that sweeper pins, `study.tell(values=[nan])` raises and the sweeper's
own failure handler raises again (a crash). So such a job raises `ObjectiveMissing` (its result.json
keeps its status and gains an `objective` block saying what is missing and why; llem's manifest and
report show it), and llem's launcher warns when max_failure_rate is 0.

Pure module: no torch, no Hydra.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llem.errors import ConfigError, LlemError

KEY = "study.objective"
DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}
SECTIONS = ("throughput", "latency", "energy", "serving", "timing", "workload", "flops", "memory")
ALLOWED = ("'<result field>:<min|max>' or a list of them, e.g. [energy.j_per_output_token:min,"
           "latency.ttft_s.p90:min] or throughput.output_tok_s:max")


class ObjectiveMissing(LlemError):
    """A job's objective figure is missing (not measured, or the job failed): a failed trial."""

    exit_code = 1


@dataclass(frozen=True)
class Objective:
    field: str
    direction: str  # minimize | maximize (Optuna's words)

    @property
    def spec(self) -> str:
        return f"{self.field}:{self.direction[:3]}"


def _leaves(prefix: str, block: Any, out: set[str]) -> None:
    """Numeric leaves; a null leaf counts when its name says it is a figure (a unit or a statistic)."""
    from llem.results import NUMERIC_NAME

    if isinstance(block, Mapping):
        for key, value in block.items():
            _leaves(f"{prefix}.{key}" if prefix else str(key), value, out)
    elif (block is None and NUMERIC_NAME.search(prefix)) or (
            isinstance(block, (int, float)) and not isinstance(block, bool)):
        out.add(prefix)


@functools.lru_cache(maxsize=1)
def numeric_fields() -> frozenset[str]:
    """Every numeric field of a result.json (offline and serving), as dotted paths: the result schema,
    built by the same code a job uses (llem.results.example, llem.serving.metrics)."""
    from llem.config.schema import ScenarioConfig
    from llem.results.example import example_result
    from llem.serving.metrics import serving_block

    result, _ = example_result(overrides=[], j_per_output_token=1.0)
    serving, _ = serving_block([], 0.0, 1.0, ScenarioConfig())
    result["serving"] = serving
    out: set[str] = set()
    for section in SECTIONS:
        _leaves(section, result.get(section) or {}, out)
    # per-request energy figures that the example's single device gives under its own names
    out |= {"energy.j_per_request", "energy.j_per_output_token", "energy.energy_j"}
    return frozenset(f for f in out if not f.startswith("serving.backend_info"))


def _items(spec: Any) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return [s.strip() for s in text.split(",") if s.strip()] if text else []
    if isinstance(spec, Sequence) or hasattr(spec, "__iter__"):
        return [str(s).strip() for s in spec]
    return [str(spec)]


def parse(spec: Any) -> list[Objective]:
    """The objectives of `study.objective` ([] when unset); ConfigError (one line per problem) if any
    item names no numeric result field or has no min/max direction."""
    found: list[Objective] = []
    bad: list[tuple[str, Any, str]] = []
    fields = numeric_fields()
    for item in _items(spec):
        field_name, sep, direction = item.rpartition(":")
        if not sep:
            bad.append((KEY, item, f"a direction after the field: '{item}:min' or '{item}:max'"))
            continue
        if direction.strip().lower() not in DIRECTIONS:
            bad.append((KEY, item, f"direction min or max (got '{direction}')"))
            continue
        field_name = field_name.strip()
        if field_name not in fields:
            near = sorted(f for f in fields if f.split(".")[-1] == field_name.split(".")[-1]
                          or f.startswith(field_name + "."))[:4]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            bad.append((KEY, item, f"a numeric result field (e.g. throughput.output_tok_s, latency.ttft_s.p90, "
                                   f"energy.j_per_output_token){hint}"))
            continue
        found.append(Objective(field_name, DIRECTIONS[direction.strip().lower()]))
    if spec is not None and not found and not bad:
        bad.append((KEY, spec, ALLOWED))
    if bad:
        raise ConfigError(bad)
    return found


def problems(spec: Any) -> list[tuple[str, Any, str]]:
    """parse()'s problems as (key, value, allowed) tuples, for llem.config.validate."""
    try:
        parse(spec)
    except ConfigError as e:
        return list(getattr(e, "problems", None) or [(KEY, spec, ALLOWED)])
    return []


def lookup(result: Mapping[str, Any], field_name: str) -> Any:
    node: Any = result
    for part in field_name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _why_missing(result: Mapping[str, Any], field_name: str) -> str:
    if result.get("status") != "completed":
        err = result.get("error") or {}
        return f"job {result.get('status')}: {err.get('type', '')}: {str(err.get('message', ''))[:200]}".rstrip(": ")
    if field_name.startswith("energy.") or ".energy." in field_name:
        energy = result.get("energy") or {}
        if not energy.get("measured"):
            return f"energy not measured: {energy.get('reason') or 'no meter'}"
    return f"{field_name} is null in result.json"


def block(result: Mapping[str, Any], objectives: Sequence[Objective]) -> dict[str, Any]:
    """result.json's `objective` block: fields, directions, values (NaN → null) and what is missing."""
    values: list[float | None] = []
    missing: dict[str, str] = {}
    for o in objectives:
        v = lookup(result, o.field)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and result.get("status") == "completed":
            values.append(float(v))
        else:
            values.append(None)
            missing[o.field] = _why_missing(result, o.field)
    return {"fields": [o.field for o in objectives], "directions": [o.direction for o in objectives],
            "values": values, "status": "missing" if missing else "ok", "missing": missing}


def hydra_value(values: Sequence[float | None]) -> float | list[float]:
    """What the task function returns: a float for one objective, a list for several; NaN where missing."""
    floats = [math.nan if v is None else float(v) for v in values]
    return floats[0] if len(floats) == 1 else floats


def nan_value(n: int) -> float | list[float]:
    return hydra_value([None] * n)


def mean_over_cycles(per_cycle: Sequence[Sequence[float | None]]) -> list[float | None]:
    """The objective of a config run over several cycles: the mean of each figure over its cycles;
    missing (None) if any cycle lacks it (a failed cycle fails the trial)."""
    if not per_cycle:
        return []
    out: list[float | None] = []
    for k in range(len(per_cycle[0])):
        column = [c[k] if k < len(c) else None for c in per_cycle]
        out.append(None if any(v is None or not math.isfinite(v) for v in column) else sum(column) / len(column))
    return out
