"""Property test: a bad value for EVERY key of the schema is refused before anything loads.

The schema is walked generically: every field of ExperimentConfig, its sections, and each backend's
section (with that backend selected). For each key, bad values are generated from its type:

- int: -10**9 (no count, size, index, seed or code of llem's may be that);
- float: -1e9 and nan (nan is never a setting);
- str: "" (null is the default, never ""); and "no-such-choice-xyz" where the key takes a fixed set of
  words or a path (free-form strings are in ALLOWED_FREE below, with the reason);
- list: a list of one bad item of the element's type;
- bool, enums and every type: a value of the wrong type ("abc", "maybe"), refused by the structured
  schema when the config is composed (checked through OmegaConf, as Hydra does).

The promise for each: `check_before_load` (validation + the file-system checks of the model, the entry
point that `run_job` runs before meters or models) raises a UserError whose lines start with the key;
the type errors are OmegaConf ValidationErrors that `llem.app` maps to one `llem: key=value is invalid`
line. A new knob without a check fails here, with the key and the value in the message. A handful of
CLI runs in tests/properties/test_bad_input_round2.py prove the same path end to end (exit 2, one `llem:` line).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from typing import Any

import pytest

from llem.config.overrides import _unwrap
from llem.config.schema import BACKENDS, ExperimentConfig
from llem.errors import UserError

# Keys where "any string" is legitimately valid, or checked only where it is used (still before any model
# loads, but needing the network or the host): the reason each one is not refused here.
ALLOWED_FREE: dict[str, str] = {
    "model.revision": "any branch, tag or commit name; checked against the Hub in preflight (ConfigError, exit 2)",
    "model.tokenizer_revision": "as model.revision",
    "model.id": "any Hub repo id is well-formed; a path-like one that does not exist is refused (tested below)",
    "model.tokenizer_id": "as model.id",
    "model.cache_dir": "any folder; created when missing",
    "dataset.column": "any column name; checked against the file's columns when it is read (DatasetError)",
    "dataset.hub_id": "any Hub dataset id; checked offline/reachable when read (llem/hubdata.py)",
    "dataset.hub_config": "any config name of the Hub dataset; checked when read",
    "dataset.split": "any split name (train, test, validation[:10%], ...); checked when read",
    "energy.reason": "free text recorded in the result",
    "energy.rapl.root": "a folder; checked by the RAPL meter when it is built, before load (MeterUnavailable)",
    "pytorch.device_map": "accelerate's device_map: auto, balanced, a device name...; accelerate decides",
    "vllm.quantization": "vLLM's list of quantization methods changes with its version; vLLM decides",
    "openai.model_name": "any served model name; checked against /v1/models when the server answers",
    "study.history_dir": "any folder; a missing one has no earlier results",
    "study_job.config_hash": "bookkeeping written by llem's sweeper (refused as an override in studies)",
    "study_job.study_design_hash": "as study_job.config_hash",
    "tracking.uri": "any MLflow tracking URI (a folder, sqlite:///..., http://...); MLflow opens it",
    "tracking.experiment": "any MLflow experiment name (created when missing)",
    "energy.node.chassis": "any Redfish chassis id; an unknown one is refused when the meter opens, before load",
    "openai.api_key_env": "well-formed names are allowed; an unset one is refused (tested by the openai tests)",
}
# Free-form mappings and lists whose items the backend or server interprets: no bad value is
# representable here.
ALLOWED_ANY: dict[str, str] = {
    "energy.extra": "free-form mapping for meters (passthrough)",
    "vllm.engine_args": "free-form mapping passed to vllm.LLM(...) (passthrough)",
    "openai.extra_body": "free-form request fields (reserved ones are refused by openai's checks)",
    "openai.server.extra_args": "argv items for the server's own parser",
}
# Keys whose meaning needs another setting first, so that the bad value is read at all.
CONTEXT: dict[str, dict[str, Any]] = {
    "dataset.path": {"dataset.name": "jsonl"},
    "pytorch.temperature": {"pytorch.decoding": "sample"},
    "pytorch.top_k": {"pytorch.decoding": "sample"},
    "pytorch.top_p": {"pytorch.decoding": "sample"},
    "openai.server.ready_timeout_s": {},
    "openai.server.command": {},
    "energy.node.address": {"energy.node.source": "redfish"},
}
BAD_WORD = "no-such-choice-xyz"


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def schema_keys() -> list[tuple[str, str, Any]]:
    """(backend, dotted key, type) of every leaf of the schema; backend sections under their backend."""
    out: list[tuple[str, str, Any]] = []

    def walk(cls: type, prefix: str, backend: str) -> None:
        for name, tp in _fields(cls).items():
            inner = _unwrap(tp)
            key = prefix + name
            if name in BACKENDS and not prefix:
                walk(BACKENDS[name].config, f"{name}.", name)
            elif _is_section(inner):
                walk(inner, f"{key}.", backend)
            else:
                out.append((backend, key, tp))

    walk(ExperimentConfig, "", "pytorch")
    return out


def _bad_values(key: str, tp: Any) -> list[Any]:
    inner = _unwrap(tp)
    origin = typing.get_origin(inner)
    if key in ALLOWED_ANY:
        return []
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return []  # an enum field holds only its members: the type test below covers it
    if inner is bool:
        return []
    if inner is int:
        return [-10**9]
    if inner is float:
        return [-1e9, math.nan]
    if inner is str:
        return [""] if key in ALLOWED_FREE else ["", BAD_WORD]
    if origin is list:
        item = _unwrap(typing.get_args(inner)[0]) if typing.get_args(inner) else str
        if item is int:
            return [[-1]]
        return [["/no/such/program", "{port}"]] if key == "openai.server.command" else [[""]]
    return [object()]  # a type this test does not know: fails until it is taught


def _config(backend: str) -> Any:
    cfg = ExperimentConfig()
    cfg.backend = backend
    setattr(cfg, backend, BACKENDS[backend].config())
    if backend == "openai":
        import llem.backends.openai.backend  # noqa: F401  (its checks need aiohttp: present in the test env)
    return cfg


def _set(cfg: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, last, value)


def check_before_load(cfg: Any) -> None:
    """What `run_job` checks before meters, baseline or model: validation, then the model's
    file-system checks (the Hub and the server probes are left to their own tests: network)."""
    from llem.config.validate import validate
    from llem.models import locate_all

    validate(cfg)
    locate_all(cfg)


CASES = [(b, k, v) for b, k, tp in schema_keys() for v in _bad_values(k, tp)]
TRIED: list[tuple[str, Any, bool]] = []


def _id(case: tuple[str, str, Any]) -> str:
    return f"{case[1]}={case[2]!r}"


def test_the_walk_sees_every_section_and_backend() -> None:
    keys = {k for _, k, _ in schema_keys()}
    assert {"n", "model.id", "scenario.slo.ttft_s", "openai.server.command", "vllm.max_num_seqs",
            "pytorch.batch_size", "study.max_jobs", "max_prompts"} <= keys
    for name in BACKENDS:  # a new backend's knobs are walked too
        assert any(k.startswith(f"{name}.") for k in keys), name
    stale = (set(ALLOWED_FREE) | set(ALLOWED_ANY) | set(CONTEXT)) - keys
    assert not stale, f"allow-list entries for keys the schema no longer has: {sorted(stale)}"
    assert len(CASES) > 150, len(CASES)
    from llem.config.overrides import MOVED_KEYS
    from llem.launch.settings import LaunchSettings

    assert set(MOVED_KEYS) == {f"study.{k}" for k in LaunchSettings.names()}  # the launcher's knobs left study.*
    assert not set(MOVED_KEYS) & keys


@pytest.mark.parametrize(("backend", "key", "value"), CASES, ids=[_id(c) for c in CASES])
def test_a_bad_value_of_every_key_is_refused_naming_the_key(backend: str, key: str, value: Any) -> None:
    cfg = _config(backend)
    for k, v in CONTEXT.get(key, {}).items():
        _set(cfg, k, v)
    _set(cfg, key, value)
    try:
        check_before_load(cfg)
    except UserError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        assert lines, key
        names = (key, key.removesuffix(".name"))  # scenario.name is chosen as the group: scenario=...
        assert any(line.startswith((f"{n}=", f"{n}:")) for n in names for line in lines), (
            f"{key}={value!r} was refused, but no line names the key: {lines}")
        return
    pytest.fail(f"{key}={value!r} (backend={backend}) was accepted: add a range/enum check for '{key}' "
                "(llem/config/validate.py or the backend's checks), or list it in ALLOWED_FREE/ALLOWED_ANY "
                "in tests/properties/test_every_key.py with the reason no bad value exists")


# -- types: what the structured schema refuses at compose time ----------------------------------------
def _wrong_type(tp: Any) -> Any:
    inner = _unwrap(tp)
    origin = typing.get_origin(inner)
    if inner is bool:
        return "maybe"
    if inner in (int, float) or (isinstance(inner, type) and issubclass(inner, enum.Enum)):
        return "abc"
    if origin is list:
        item = _unwrap(typing.get_args(inner)[0]) if typing.get_args(inner) else str
        return ["abc"] if item in (int, float) else None
    if origin is dict or inner is dict:
        return "not-a-mapping"
    return None  # str and Any take any scalar


TYPED = [(b, k, _wrong_type(tp)) for b, k, tp in schema_keys() if _wrong_type(tp) is not None]


@pytest.mark.parametrize(("backend", "key", "value"), TYPED, ids=[_id(c) for c in TYPED])
def test_a_value_of_the_wrong_type_is_refused_at_compose_time_naming_the_key(backend: str, key: str,
                                                                             value: Any) -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from llem.app import _omegaconf_problem

    base = OmegaConf.structured(ExperimentConfig)
    base[backend] = OmegaConf.structured(BACKENDS[backend].config)
    with pytest.raises(ValidationError) as info:
        OmegaConf.update(base, key, value, merge=isinstance(value, list))
    shown_key, shown_value, allowed = _omegaconf_problem(info.value)
    assert (shown_key == key or shown_key.startswith(key + "[")) and allowed, (shown_key, shown_value, allowed)


def test_count_of_bad_inputs_tried(capsys: pytest.CaptureFixture[str]) -> None:
    """The count for the notes: every generated bad value, and those whose key is allow-listed."""
    keys = schema_keys()
    with capsys.disabled():
        print(f"\nbad values tried: {len(CASES)} range/enum/path + {len(TYPED)} type = {len(CASES) + len(TYPED)} "
              f"over {len(keys)} keys; allow-listed keys: {len(ALLOWED_FREE)} free strings, {len(ALLOWED_ANY)} "
              "free-form")
