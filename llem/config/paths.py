"""Where llem's YAML configs live: `./conf` in a checkout, `llem/conf` inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The checkout's conf/ wins, so edits to the YAML take effect without reinstalling."""
    for candidate in (PACKAGE_DIR.parent / "conf", PACKAGE_DIR / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"llem's conf/ folder is missing (looked beside and inside {PACKAGE_DIR})")
