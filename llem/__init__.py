"""llem: measure the energy, speed and latency of LLM inference.

`llem.run(...)` and `llem.run_study(...)` (llem/search/api.py) are imported on first use, so
`import llem` stays cheap (no torch, no Hydra)."""

from typing import Any


def _version() -> str:
    """The installed distribution's version (set from the git tag at build time, hatch-vcs); a source tree
    on PYTHONPATH without an installed llem says so rather than guessing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llem")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
__all__ = ["run", "run_study", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("run", "run_study"):
        from llem.search import api

        return getattr(api, name)
    raise AttributeError(f"module 'llem' has no attribute {name!r}")
