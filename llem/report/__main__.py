"""`python -m llem.report <folder> [--out DIR] [--vs OTHER] [--cv-threshold X] [--job DIR]`."""

from __future__ import annotations

import argparse
import sys

from llem.results.aggregate import CV_THRESHOLD


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llem.report",
        description="Tables, plots and a Markdown page from llem results (a run, a sweep, or a tree of them).")
    parser.add_argument("folder", help="run folder, sweep folder (multirun/<date>/<time>) or a tree of them")
    parser.add_argument("--out", help="where to write the report (default: <folder>/report)")
    parser.add_argument("--vs", metavar="OTHER", help="compare with another study: ratios OTHER/folder per config")
    parser.add_argument("--cv-threshold", type=float, default=CV_THRESHOLD,
                        help=f"flag configs whose cycle-to-cycle CV exceeds this (default {CV_THRESHOLD})")
    parser.add_argument("--job", help="job folder whose power/temperature timeseries to plot "
                        "(default: the first completed job that has one)")
    args = parser.parse_args(argv)
    if not args.cv_threshold > 0:
        parser.error(f"--cv-threshold={args.cv_threshold}: allowed a number > 0")
    from llem.extras import MissingExtra, require

    try:
        require("report")  # matplotlib: one line with the pip command, not a traceback from deep inside
    except MissingExtra as e:
        print(f"llem: {e}", file=sys.stderr)
        return 2
    from llem.report import ReportError, build_report

    try:
        report = build_report(args.folder, args.out, args.vs, args.cv_threshold, args.job)
    except ReportError as e:
        print(f"llem.report: {e}", file=sys.stderr)
        return 2
    print(report.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
