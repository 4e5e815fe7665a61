"""Host checks of the pytorch backend before any model loads (registered as BackendSpec.preflight):
the device asked for exists. Reads torch's build without importing torch where it can."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llem.errors import ConfigError


def check_device(cfg: Any) -> None:
    """`pytorch.device=cuda` / `cuda:N` / `mps` that this host's torch cannot see (before the model loads)."""
    pt = getattr(cfg, "pytorch", None)
    if cfg.backend != "pytorch" or pt is None or not str(pt.device).startswith(("cuda", "mps")):
        return
    device = str(pt.device)
    build = _torch_build()
    if device.startswith("cuda") and build is not None and build.get("cuda") is None and not build.get("hip"):
        raise ConfigError([("pytorch.device", device, f"auto or cpu on this host: torch {build.get('__version__')} "
                                                      "is a CPU-only build")])
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError([("pytorch.device", device, "auto or cpu: this host has no Apple MPS device")])
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    if count == 0:
        cuda_build = (build.get("cuda") or build.get("hip")) if build is not None else torch.version.cuda
        why = "torch is a CPU-only build" if cuda_build is None else "torch sees no CUDA device" + seen
        raise ConfigError([("pytorch.device", device, f"auto or cpu on this host: {why} (torch {torch.__version__})")])
    if index >= count:
        raise ConfigError([("pytorch.device", device, f"cuda or cuda:0..cuda:{count - 1}: {count} CUDA "
                                                      f"device(s) visible{seen}")])


def _torch_build() -> dict[str, Any] | None:
    """torch/version.py's constants read without importing torch (seconds on a busy host), or None."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
        origin = Path(spec.origin).parent / "version.py" if spec and spec.origin else None
        tree = ast.parse(origin.read_text()) if origin and origin.is_file() else None
    except (OSError, SyntaxError, ValueError):
        return None
    if tree is None:
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            found[target.id] = value.value
    return found if "cuda" in found else None
