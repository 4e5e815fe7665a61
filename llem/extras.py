"""Optional dependencies: one table (feature → import → pip extra) and one `require(feature)`.

A plain `pip install llem` runs the pytorch backend with the NVML and RAPL meters; everything else is an
extra. Whatever needs one calls `require(feature)` (or `check_config(cfg)` for a composed job) before
any model loads: a missing package is `MissingExtra` (a UserError: one `llem:` line, exit 2) naming the
feature and the exact `pip install 'llem[extra]'`. Presence is checked with `importlib.util.find_spec`
(nothing is imported here), so the checks cost microseconds and run at planning time too.

Adding an optional dependency = one `Extra` line in `EXTRAS`, the same extra in pyproject.toml's
`[project.optional-dependencies]` (and in `all`), and a `require("<feature>")` where it is first needed.
Hydra plugins (launchers, sweepers) appear as config-group options only when installed; `group_hint`
gives the pip line for `hydra/launcher=joblib` and the like when Hydra says "no such option".
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Any

from llem.errors import UserError


@dataclass(frozen=True)
class Extra:
    feature: str  # what the user asked for, as they wrote it
    modules: tuple[str, ...]  # every one must be importable
    extra: str  # pip extra of llem that installs them
    what: str  # the package(s), in words


EXTRAS: dict[str, Extra] = {
    "vllm": Extra("backend=vllm", ("vllm",), "vllm", "vLLM"),
    "openai": Extra("backend=openai", ("aiohttp",), "openai", "aiohttp (the streaming HTTP client)"),
    "openai-server": Extra("backend=openai with a server llem starts (openai.base_url=null)", ("vllm",),
                           "vllm", "vLLM (its OpenAI-compatible server)"),
    "report": Extra("python -m llem.report", ("matplotlib",), "report", "matplotlib"),
    "datasets": Extra("dataset=hf / dataset=aienergyscore from the Hub", ("datasets",), "datasets",
                      "Hugging Face datasets"),
    "zeus": Extra("energy=zeus", ("zeus",), "zeus", "Zeus (zeus)"),
    "codecarbon": Extra("energy=codecarbon", ("codecarbon",), "codecarbon", "CodeCarbon"),
    "amdsmi": Extra("energy=amdsmi (AMD GPUs)", ("amdsmi",), "amd", "amdsmi (AMD SMI's Python bindings)"),
    "ipmi": Extra("node power over IPMI DCMI", ("pyghmi",), "node", "pyghmi"),
    "mlflow": Extra("tracking=mlflow", ("mlflow",), "mlflow", "MLflow"),
    "optuna": Extra("hydra/sweeper=optuna", ("hydra_plugins.hydra_optuna_sweeper",), "optuna",
                    "Hydra's Optuna sweeper (hydra-optuna-sweeper)"),
    "joblib": Extra("hydra/launcher=joblib", ("hydra_plugins.hydra_joblib_launcher",), "joblib",
                    "Hydra's joblib launcher (hydra-joblib-launcher)"),
    "slurm": Extra("hydra/launcher=slurm", ("hydra_plugins.hydra_submitit_launcher",), "slurm",
                   "Hydra's submitit launcher (hydra-submitit-launcher)"),
    "ray": Extra("hydra/launcher=llem_ray", ("ray", "hydra_plugins.hydra_ray_launcher"), "ray",
                 "Ray and Hydra's Ray launcher (hydra-ray-launcher)"),
}

# Config-group options that exist only when an extra is installed: (group, option) → feature.
GROUP_OPTIONS: dict[tuple[str, str], str] = {
    ("hydra/launcher", "joblib"): "joblib",
    ("hydra/launcher", "submitit_slurm"): "slurm",
    ("hydra/launcher", "submitit_local"): "slurm",
    ("hydra/launcher", "slurm"): "slurm",
    ("hydra/launcher", "ray"): "ray",
    ("hydra/launcher", "ray_aws"): "ray",
    ("hydra/launcher", "llem_ray"): "ray",
    ("hydra/sweeper", "optuna"): "optuna",
}

ENERGY_METERS = {"zeus": "zeus", "codecarbon": "codecarbon", "amdsmi": "amdsmi"}  # energy.meter → feature


class MissingExtra(UserError, ImportError):
    """An optional dependency is not installed: one line per feature with its pip command."""

    def __init__(self, features: list[str]):
        self.features = features
        super().__init__("\n".join(message(f) for f in features))


def pip_line(feature: str) -> str:
    return f"pip install 'llem[{EXTRAS[feature].extra}]'"


def message(feature: str, reason: str = "") -> str:
    e = EXTRAS[feature]
    return f"{e.feature} needs {e.what}, which is not installed{reason}: {pip_line(feature)}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def installed(feature: str) -> bool:
    return all(_importable(m) for m in EXTRAS[feature].modules)


def require(*features: str) -> None:
    """Raise MissingExtra naming every feature of `features` whose packages are not installed."""
    missing = [f for f in features if not installed(f)]
    if missing:
        raise MissingExtra(missing)


def needed_by(cfg: Any) -> list[str]:
    """Features a composed job (llem.config.schema.ExperimentConfig) needs, in a stable order."""
    out: list[str] = []
    backend = getattr(cfg, "backend", None)
    if backend == "vllm":
        out.append("vllm")
    elif backend == "openai":
        out.append("openai")
        o = getattr(cfg, "openai", None)
        server = getattr(o, "server", None)
        if o is not None and o.base_url is None and getattr(server, "command", None) is None:
            out.append("openai-server")  # llem starts vLLM's OpenAI server
    meter = str(getattr(getattr(cfg, "energy", None), "meter", ""))
    if meter in ENERGY_METERS:
        out.append(ENERGY_METERS[meter])
    d = getattr(cfg, "dataset", None)
    if d is not None and (d.name == "hf" or (d.name == "aienergyscore" and not d.path)):
        out.append("datasets")
    node = getattr(getattr(cfg, "energy", None), "node", None)
    if getattr(node, "source", None) == "ipmi":
        out.append("ipmi")
    if getattr(getattr(cfg, "tracking", None), "name", None) == "mlflow":
        out.append("mlflow")
    return out


def check_config(cfg: Any) -> None:
    """MissingExtra for a job whose backend, meter or dataset needs a package that is not installed."""
    require(*needed_by(cfg))


def group_hint(group: str, option: str) -> str:
    """'; <group>=<option> needs ...: pip install ...' for a config-group option that an uninstalled extra
    would add, else ''."""
    feature = GROUP_OPTIONS.get((group, option))
    if feature is None or installed(feature):
        return ""
    return f"; {group}={option} needs {EXTRAS[feature].what}, which is not installed: {pip_line(feature)}"


def missing_config_hint(missing: str) -> str:
    """The hint for Hydra's "Could not load 'hydra/launcher/submitit_slurm'" (a preset whose defaults
    name a plugin's config, as conf/hydra/launcher/slurm.yaml does)."""
    group, _, option = missing.rpartition("/")
    return group_hint(group, option)


_PLUGIN_CLASS = re.compile(r"Unknown plugin class\s*:\s*'([\w.]+)'")


def plugin_class_message(error: str) -> str | None:
    """Hydra's "Unknown plugin class : 'hydra_plugins.hydra_ray_launcher...'" (a config that names a plugin
    which is not installed, as conf/hydra/launcher/llem_ray.yaml does) as the extra's line, else None."""
    found = _PLUGIN_CLASS.search(error)
    if not found:
        return None
    target = found.group(1)
    for feature, e in EXTRAS.items():
        if any(target == m or target.startswith(m + ".") for m in e.modules) and not installed(feature):
            return message(feature)
    return None

