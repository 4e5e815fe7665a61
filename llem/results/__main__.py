"""`python -m llem.results schema`: the JSON Schema of result.json, generated from llem.result_schema's types.

    python -m llem.results schema              # JSON Schema (draft 2020-12) of result.json
    python -m llem.results schema requests     # ... of a requests.jsonl row (timeseries, manifest, plan alike)
    python -m llem.results schema --markdown   # the field tables of docs/results-schema.md
    python -m llem.results validate PATH...    # check result.json files (needs jsonschema)
"""

from __future__ import annotations

import json
import sys

USAGE = ("usage: python -m llem.results schema [result|requests|timeseries|manifest|plan] [--markdown] | "
         "validate RESULT_JSON...")
DOCS = ("result", "requests", "timeseries", "manifest", "plan")


def schema_markdown() -> str:
    from llem.result_schema.generate import markdown
    from llem.result_schema.types import ManifestDoc, PlanDoc, RequestRow, ResultDoc, TimeseriesRow

    return markdown([ResultDoc, RequestRow, TimeseriesRow, ManifestDoc, PlanDoc])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["schema"] and args[1:] in ([], ["--markdown"], *([d] for d in DOCS)):
        if args[1:] == ["--markdown"]:
            sys.stdout.write(schema_markdown())
        elif args[1:] in ([], ["result"]):
            from llem.result_schema import result_schema

            print(json.dumps(result_schema(), indent=2))
        else:
            from llem.result_schema import schema_of
            from llem.result_schema import types as t

            cls = {"requests": t.RequestRow, "timeseries": t.TimeseriesRow, "manifest": t.ManifestDoc,
                   "plan": t.PlanDoc}[args[1]]
            print(json.dumps(schema_of(cls), indent=2))
        return 0
    if args[:1] == ["validate"] and args[1:]:
        try:
            import jsonschema  # noqa: F401
        except ImportError:
            print("llem: python -m llem.results validate needs the jsonschema package: pip install jsonschema "
                  "(or check files with any JSON Schema tool against `python -m llem.results schema`)",
                  file=sys.stderr)
            return 2
        from llem.result_schema import ResultSchemaError, validate_result

        bad = 0
        for path in args[1:]:
            try:
                with open(path, encoding="utf-8") as f:
                    validate_result(json.load(f))
                print(f"{path}: ok")
            except (OSError, ValueError, ResultSchemaError) as e:
                bad += 1
                print(f"{path}: {e}")
        return 1 if bad else 0
    print(f"llem: {USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
