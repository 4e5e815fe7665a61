"""llem installed as users install it: wheel and sdist built and checked, the wheel installed into a bare
virtual environment that has only torch (CPU), and run from outside the repository.

No PYTHONPATH, no checkout: the quick start, a 2-job study, one `llem:` line with its pip command for
every optional dependency that is missing, then `[report]` installed and a report rendered. torch comes
from the same source as scripts/setup.sh's (pip's configuration, LLEM_TORCH_INDEX; the version of this
environment's torch, so pip's cache or a local wheel serves it); the rest from the package index.
Takes about two minutes, most of it pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

SMALL = ["n=4", "pytorch.max_output_tokens=4", "warmup.n_batches=0", "dataset.input_tokens=16"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(p: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert p.returncode == 0, f"{p.args}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _errors(p: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's lines, with the '(result.json with status failed: ...)' tail of single jobs cut."""
    assert p.returncode == 2, f"{p.args}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return [line.split(" (result.json with status failed")[0] for line in p.stderr.strip().splitlines()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """wheel + sdist of this checkout (the wheel built from the sdist, as `python -m build` does)."""
    out = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)], REPO,
             {**os.environ}))
    (wheel,) = out.glob("llem-*.whl")
    (sdist,) = out.glob("llem-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_wheel_and_sdist_pass_twine_check_and_carry_configs_and_plugins(dist: dict[str, Path]) -> None:
    p = _ok(_run([sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])],
                 REPO, {**os.environ}))
    assert p.stdout.count("PASSED") == 2
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert "llem/conf/config.yaml" in names and "llem/extras.py" in names
    assert any(n.startswith("hydra_plugins/llem_sweeper/") for n in names)
    assert any(n.startswith("hydra_plugins/llem_launcher/") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    meta = zipfile.ZipFile(dist["wheel"]).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    version = dist["wheel"].name.split("-")[1]
    assert dist["sdist"].name == f"llem-{version}.tar.gz"  # the wheel, built from the sdist (no git), kept it
    assert f"Version: {version}" in meta and "Provides-Extra: all" in meta and "Provides-Extra: report" in meta
    with tarfile.open(dist["sdist"]) as t:
        members = t.getnames()
    top = dist["sdist"].name[: -len(".tar.gz")]
    assert f"{top}/PKG-INFO" in members and f"{top}/conf/config.yaml" in members  # the sdist knows its version
    assert f"{top}/CHANGELOG.md" in members


def test_bare_install_runs_and_names_every_missing_extra(dist: dict[str, Path], tmp_path: Path) -> None:
    import torch

    venv, user = tmp_path / "venv", tmp_path / "elsewhere"
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["LLEM_CACHE"] = str(tmp_path / "cache")
    _ok(_run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], user, env))
    py, llem = str(venv / "bin" / "python"), str(venv / "bin" / "llem")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]  # .pyc on first import
    index = os.environ.get("LLEM_TORCH_INDEX")
    _ok(_run([*pip, f"torch=={torch.__version__.split('+')[0]}", *(["--index-url", index] if index else [])],
             user, env, 600))
    _ok(_run([*pip, str(dist["wheel"])], user, env, 600))
    version = dist["wheel"].name.split("-")[1]

    # nothing of the checkout leaks in
    p = _ok(_run([py, "-c", "import llem, sys; print(llem.__file__); print(llem.__version__)"], user, env))
    where, seen = p.stdout.split()
    assert where.startswith(str(venv)) and seen == version
    assert _ok(_run([llem, "--version"], user, env)).stdout == f"llem {version}\n"
    assert _ok(_run([py, "-m", "llem", "--version"], user, env)).stdout == f"llem {version}\n"

    # the quick start: the default job, from another folder
    p = _ok(_run([llem, *SMALL], user, env))
    (result,) = user.glob("outputs/*/*/result.json")
    r = json.loads(result.read_text())
    assert r["status"] == "completed" and r["llem_version"] == version and "output tok/s" in p.stdout

    # a 2-job study; its summary names the report extra (matplotlib is absent)
    p = _ok(_run([llem, "-m", *SMALL, "n=2,3", "hydra.sweep.dir=study"], user, env))
    results = sorted((user / "study").glob("*/result.json"))
    assert len(results) == 2 and all(json.loads(f.read_text())["status"] == "completed" for f in results)
    assert "plots: python -m llem.report" in p.stdout + p.stderr
    assert "(needs matplotlib: pip install 'llem[report]')" in p.stdout + p.stderr

    # every missing extra: one line naming the feature and its pip command, exit 2, no model loaded
    needs = "which is not installed: pip install"
    assert _errors(_run([llem, "backend=vllm", "energy=zeus", "dataset=hf", "dataset.hub_id=a/b"], user, env)) == [
        f"llem: backend=vllm needs vLLM, {needs} 'llem[vllm]'",
        f"llem: energy=zeus needs Zeus (zeus), {needs} 'llem[zeus]'",
        f"llem: dataset=hf / dataset=aienergyscore from the Hub needs Hugging Face datasets, {needs} 'llem[datasets]'"]
    assert _errors(_run([llem, "backend=openai", "energy=codecarbon"], user, env)) == [
        f"llem: backend=openai needs aiohttp (the streaming HTTP client), {needs} 'llem[openai]'",
        "llem: backend=openai with a server llem starts (openai.base_url=null) needs vLLM (its OpenAI-compatible "
        f"server), {needs} 'llem[vllm]'",
        f"llem: energy=codecarbon needs CodeCarbon, {needs} 'llem[codecarbon]'"]
    assert _errors(_run([llem, "-m", "backend=vllm", "n=2,3", "hydra.sweep.dir=s2"], user, env)) == [
        f"llem: backend=vllm needs vLLM, {needs} 'llem[vllm]'"]
    assert not (user / "s2").exists() or not list((user / "s2").glob("*/result.json"))
    for override, extra in (("hydra/launcher=joblib", "joblib"), ("hydra/launcher=submitit_slurm", "slurm"),
                            ("hydra/launcher=slurm", "slurm"), ("hydra/launcher=llem_ray", "ray"),
                            ("hydra/sweeper=optuna", "optuna")):
        (line,) = _errors(_run([llem, "-m", override, "n=2,3"], user, env))
        assert line.startswith("llem: ") and line.endswith(f"{needs} 'llem[{extra}]'"), line
    (line,) = _errors(_run([py, "-m", "llem.report", "study"], user, env))
    assert line == f"llem: python -m llem.report needs matplotlib, {needs} 'llem[report]'"
    p = _ok(_run([py, "-c", "from llem.extras import EXTRAS, installed, message\n"
                  "for f in ('amdsmi', 'ipmi', 'mlflow'):\n    print(installed(f), message(f))"], user, env))
    assert p.stdout.splitlines() == [
        f"False energy=amdsmi (AMD GPUs) needs amdsmi (AMD SMI's Python bindings), {needs} 'llem[amd]'",
        f"False node power over IPMI DCMI needs pyghmi, {needs} 'llem[node]'",
        f"False tracking=mlflow needs MLflow, {needs} 'llem[mlflow]'"]

    # the report extra, then a report of the study
    _ok(_run([*pip, f"{dist['wheel']}[report]"], user, env, 600))
    p = _ok(_run([py, "-m", "llem.report", "study"], user, env))
    assert list((user / "study" / "report").glob("*.png")) and (user / "study" / "report").is_dir()
