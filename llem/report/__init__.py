"""`python -m llem.report <folder>`: tables, plots and one Markdown page (code in build.py)."""

from __future__ import annotations

from llem.report.build import (  # noqa: F401
    PAGE,
    Report,
    ReportError,
    build_report,
)
