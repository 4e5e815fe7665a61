"""llem: measure the energy, speed and latency of LLM inference.

`llem.run(...)` and `llem.run_study(...)` (llem/search/api.py) are imported on first use, so
`import llem` stays cheap (no torch, no Hydra)."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "run_study", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("run", "run_study"):
        from llem.search import api

        return getattr(api, name)
    raise AttributeError(f"module 'llem' has no attribute {name!r}")
