"""Shared fixtures: one tiny model cache per test session, and a helper to run llem as users do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Tests send SIGINT, SIGTERM and SIGHUP to llem as a terminal, `kill` and a closing terminal do. A suite
# started in the background of a non-interactive shell (`pytest ... &`) inherits SIGINT ignored, one under
# `nohup` SIGHUP ignored, and llem rightly keeps an inherited ignore (llem/faults.py): give this process,
# and so every llem it starts, the signals as a terminal has them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.SIG_DFL)
# Shared fakes (tests/fakes: gpu_sim, amd_sim, energy_fakes, fake_openai, node_bmc, ...) are imported by
# their plain names (`from gpu_sim import host`), and helpers here as `from conftest import run_llem`: with
# pytest's importlib import mode no test folder lands on sys.path, so both folders are put there once.
FAKES = TESTS / "fakes"
for _folder in (str(TESTS), str(FAKES)):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)
# The 1,000 AIEnergyScore text-generation prompts (Apache-2.0; provenance on line 1), kept in the
# repo so the dataset tests run offline on any clone.
AIENERGYSCORE = REPO / "tests" / "data" / "aienergyscore.jsonl"


@pytest.fixture(scope="session")
def llem_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLEM_CACHE for the session: tiny models are built once, then loaded via from_pretrained."""
    path = Path(os.environ.get("LLEM_TEST_CACHE") or tmp_path_factory.mktemp("llem-cache"))
    os.environ["LLEM_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(llem_cache: Path) -> Path:
    from llem.models.tiny import ensure_tiny_model

    return ensure_tiny_model("tiny-gpt2", str(llem_cache))


def run_llem(args: list[str], cwd: Path, cache: Path, timeout: float = 300, module: str = "llem",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m llem ARGS` in a subprocess, exactly as a user runs it."""
    full_env = {**os.environ, "LLEM_CACHE": str(cache), "HYDRA_FULL_ERROR": "1", **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_result(folder: Path) -> dict[str, Any]:
    """A job's result.json, checked against the JSON Schema generated from llem.result_schema's types."""
    from llem.result_schema import validate_result

    result = json.loads((folder / "result.json").read_text())
    validate_result(result)
    return result


def _written_results(root: Path) -> list[Path]:
    """result.json files llem wrote under `root` (a hand-made or torn fixture file is not llem's)."""
    from llem.result import SCHEMA_VERSION

    found = []
    for path in root.rglob("result.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION and "llem_version" in doc:
            found.append(path)
    return found


@pytest.fixture(autouse=True)
def _results_match_schema(request: pytest.FixtureRequest) -> Any:
    """Every result.json a test leaves in its tmp_path matches the result schema (`python -m llem.results
    schema`) and reads back through the typed ResultDoc (`Result.typed()`) to the same JSON: a producer
    writing a wrong type, a renamed or an unknown key fails the test that ran it.
    Opt out with @pytest.mark.no_result_schema (tests that write broken results on purpose)."""
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("no_result_schema"):
        yield
        return
    root = request.getfixturevalue("tmp_path")
    yield
    from llem.result_schema import (
        ManifestDoc,
        PlanDoc,
        RequestRow,
        ResultDoc,
        ResultSchemaError,
        validate_as,
        validate_result,
    )
    from llem.result_schema.convert import parse, to_json

    for path in _written_results(root):
        try:
            doc = json.loads(path.read_text())
            validate_result(doc)
            if json.dumps(to_json(parse(doc, ResultDoc))) != json.dumps(doc):  # Result.typed() loses nothing
                pytest.fail(f"{path}: the typed ResultDoc does not give back the same JSON", pytrace=False)
            for row in _request_rows(path.parent / "requests.jsonl"):  # its rows too (written before result.json)
                validate_as(row, RequestRow)
        except ResultSchemaError as e:
            pytest.fail(f"{path}: {e}", pytrace=False)
    for name, cls in (("manifest.json", ManifestDoc), ("plan.json", PlanDoc)):  # a study's files alike
        for path in root.rglob(name):
            doc = _json_or_none(path)
            if isinstance(doc, dict) and ("manifest_version" in doc or "plan_version" in doc):
                try:
                    validate_as(doc, cls)
                except ResultSchemaError as e:
                    pytest.fail(f"{path}: {e}", pytrace=False)


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _request_rows(path: Path) -> list[Any]:
    """The rows of a requests.jsonl; none where it is absent or torn (tests tear files on purpose)."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


@pytest.fixture
def nvml_sim(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a GPU simulator (tests/fakes/gpu_sim.py `host(...)`) as `pynvml`, with no CUDA device settings
    inherited from the shell: `sim = nvml_sim(host("H100", 8))`."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def put(sim: Any) -> Any:
        monkeypatch.setitem(sys.modules, "pynvml", sim)
        return sim

    return put
