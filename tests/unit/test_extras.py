"""Optional dependencies (llem/extras.py): one table, one line per missing extra with its pip command.

The real thing (a bare virtual environment with none of the extras) is tests/properties/test_packaging.py; here the
table, the config → feature mapping and the messages are checked in-process, with `_importable`
patched to hide packages this development environment has."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO

import llem.extras as extras
from llem.config.schema import DatasetConfig, EnergyConfig, ExperimentConfig, OpenaiConfig, VllmConfig
from llem.config.validate import validate
from llem.extras import EXTRAS, MissingExtra, needed_by, require

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = extras._importable
    monkeypatch.setattr(extras, "_importable", lambda m: m not in modules and real(m))


def test_every_feature_names_an_extra_of_pyproject() -> None:
    for feature, e in EXTRAS.items():
        assert e.extra in OPTIONAL, (feature, e.extra)
        assert e.modules and e.feature and e.what


def test_all_extra_holds_every_extra_but_amd_and_ray() -> None:
    (line,) = OPTIONAL["all"]
    inside = set(re.fullmatch(r"llem\[(.*)\]", line).group(1).split(","))
    assert inside == {e.extra for e in EXTRAS.values()} - {"amd", "ray"}
    assert inside <= set(OPTIONAL)


def test_message_names_feature_and_exact_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "vllm")
    with pytest.raises(MissingExtra) as err:
        require("vllm")
    assert str(err.value) == "backend=vllm needs vLLM, which is not installed: pip install 'llem[vllm]'"
    assert err.value.exit_code == 2 and err.value.features == ["vllm"]


def test_require_names_only_the_missing_ones_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "zeus", "mlflow")
    require("report", "datasets")  # installed here: no error
    with pytest.raises(MissingExtra) as err:
        require("zeus", "report", "mlflow")
    lines = str(err.value).splitlines()
    assert err.value.features == ["zeus", "mlflow"] and len(lines) == 2
    assert lines[0].endswith("pip install 'llem[zeus]'") and lines[1].endswith("pip install 'llem[mlflow]'")


@pytest.mark.parametrize("feature", sorted(EXTRAS))
def test_each_feature_missing_is_reported(monkeypatch: pytest.MonkeyPatch, feature: str) -> None:
    hide(monkeypatch, EXTRAS[feature].modules[-1])  # any one module missing is enough
    assert not extras.installed(feature)
    with pytest.raises(MissingExtra, match=re.escape(f"pip install 'llem[{EXTRAS[feature].extra}]'")):
        require(feature)


def test_a_module_under_a_missing_parent_is_missing() -> None:
    assert extras._importable("json") and not extras._importable("no_such_pkg_llem.sub")


def _cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig(**kw)


def test_features_a_job_needs() -> None:
    assert needed_by(_cfg()) == []
    assert needed_by(_cfg(backend="vllm", pytorch=None, vllm=VllmConfig())) == ["vllm"]
    managed = _cfg(backend="openai", pytorch=None, openai=OpenaiConfig())
    assert needed_by(managed) == ["openai", "openai-server"]
    outside = OpenaiConfig(base_url="http://127.0.0.1:8000/v1")
    assert needed_by(_cfg(backend="openai", pytorch=None, openai=outside)) == ["openai"]
    for meter, feature in (("zeus", "zeus"), ("codecarbon", "codecarbon"), ("nvml", None), ("rapl", None)):
        assert needed_by(_cfg(energy=EnergyConfig(meter=meter))) == ([feature] if feature else [])
    assert needed_by(_cfg(dataset=DatasetConfig(name="hf", hub_id="a/b"))) == ["datasets"]
    assert needed_by(_cfg(dataset=DatasetConfig(name="aienergyscore"))) == ["datasets"]
    assert needed_by(_cfg(dataset=DatasetConfig(name="aienergyscore", path="x.jsonl"))) == []
    assert needed_by(_cfg(dataset=DatasetConfig(name="jsonl", path="x.jsonl"))) == []


def test_validate_refuses_a_job_whose_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.app import user_error_lines
    from llem.config.schema import PytorchConfig

    validate(_cfg(pytorch=PytorchConfig(), energy=EnergyConfig(meter="zeus")))  # installed here
    hide(monkeypatch, "zeus")
    with pytest.raises(MissingExtra) as err:
        validate(_cfg(pytorch=PytorchConfig(), energy=EnergyConfig(meter="zeus")))
    assert user_error_lines(err.value) == ["energy=zeus needs Zeus (zeus), which is not installed: "
                                           "pip install 'llem[zeus]'"]


def test_group_hint_only_for_a_missing_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extras.group_hint("hydra/launcher", "joblib") == ""  # installed here
    assert extras.group_hint("hydra/launcher", "nonsense") == ""
    assert extras.group_hint("model", "joblib") == ""
    hide(monkeypatch, "hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_optuna_sweeper")
    assert extras.group_hint("hydra/launcher", "joblib").endswith(
        "hydra/launcher=joblib needs Hydra's joblib launcher (hydra-joblib-launcher), which is not installed: "
        "pip install 'llem[joblib]'")
    assert extras.group_hint("hydra/sweeper", "optuna").endswith("pip install 'llem[optuna]'")


def test_report_cli_without_matplotlib_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from llem.report.__main__ import main

    hide(monkeypatch, "matplotlib")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["llem: python -m llem.report needs matplotlib, which is not installed: "
                   "pip install 'llem[report]'"]


def test_study_summary_names_the_report_extra_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from llem.results.study_summary import _report_extra

    assert _report_extra() == ""
    hide(monkeypatch, "matplotlib")
    assert _report_extra() == " (needs matplotlib: pip install 'llem[report]')"


_CLI = """
import sys, llem.extras as x
real = x._importable
x._importable = lambda m: m not in {hidden!r} and real(m)
sys.argv = ["llem", *{args!r}]
from llem.app import main
main()
"""


def _cli(args: list[str], hidden: set[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-c", _CLI.format(hidden=hidden, args=args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_exits_2_with_one_line_per_missing_extra_job_and_study(tmp_path: Path) -> None:
    p = _cli(["backend=vllm", "energy=zeus", "dataset=hf", "dataset.hub_id=a/b"], {"vllm", "zeus", "datasets"},
             tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[:2] == [
        "llem: backend=vllm needs vLLM, which is not installed: pip install 'llem[vllm]'",
        "llem: energy=zeus needs Zeus (zeus), which is not installed: pip install 'llem[zeus]'"]
    assert lines[2].startswith("llem: dataset=hf / dataset=aienergyscore from the Hub needs Hugging Face "
                               "datasets, which is not installed: pip install 'llem[datasets]' (result.json "
                               "with status failed: ") and len(lines) == 3
    (result,) = tmp_path.rglob("result.json")  # as for any bad setting of a single job: failed before load
    r = json.loads(result.read_text())
    assert r["status"] == "failed" and "pip install 'llem[vllm]'" in r["error"]["message"]
    assert not r.get("model") and not list(tmp_path.rglob("requests.jsonl"))
    result.unlink()
    p = _cli(["-m", "backend=vllm", "n=2,3"], {"vllm"}, tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "llem: backend=vllm needs vLLM, which is not installed: pip install 'llem[vllm]'"]
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.slow
def test_version_flag_prints_the_package_version(tmp_path: Path) -> None:
    import llem

    for cmd in ([sys.executable, "-m", "llem", "--version"], [sys.executable, "-m", "llem", "n=2", "--version"]):
        p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert p.returncode == 0 and p.stdout == f"llem {llem.__version__}\n", p
    assert llem.__version__ not in ("", "0+unknown")  # this environment has llem installed (editable)


def test_hydra_errors_about_uninstalled_plugins_become_the_extra_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.errors import MissingConfigException

    from llem.app import user_error_lines

    unknown = RuntimeError("Unknown plugin class : 'hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher'")
    preset = MissingConfigException("In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'.",
                                    missing_cfg_file="hydra/launcher/submitit_slurm")
    assert user_error_lines(unknown) is None  # installed here: a real bug, keep the traceback
    assert user_error_lines(preset) == ["In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'."]
    assert user_error_lines(RuntimeError("Unknown plugin class : 'x.y.Z'")) is None
    hide(monkeypatch, "hydra_plugins.hydra_ray_launcher", "hydra_plugins.hydra_submitit_launcher")
    assert user_error_lines(unknown) == ["hydra/launcher=llem_ray needs Ray and Hydra's Ray launcher "
                                         "(hydra-ray-launcher), which is not installed: pip install 'llem[ray]'"]
    assert user_error_lines(preset) == [
        "In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'; hydra/launcher=submitit_slurm "
        "needs Hydra's submitit launcher (hydra-submitit-launcher), which is not installed: pip install 'llem[slurm]'"]
