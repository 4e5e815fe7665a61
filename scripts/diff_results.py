"""Compare the result.json files of two runs of the same tests (before/after a refactor), minus what
varies from run to run: every result under BEFORE is paired with the one at the same relative path
under AFTER (e.g. two `pytest --basetemp=...` folders), and compared key by key: the same keys at every
depth, the same JSON type at every leaf, equal strings and booleans with digits masked (timings,
pids and paths vary), and lists of the same length except the time series-like ones.

    python scripts/diff_results.py /tmp/bt_before /tmp/bt_after [/tmp/repo_before /path/to/repo]

Prints each difference and exits 1 if any; pairs missing on one side are listed, not counted; keys
written in another order (the same JSON object) are listed apart.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

DIGITS = re.compile(r"\b[0-9a-f]{16,40}\b|\d+(\.\d+)?(e[-+]?\d+)?")  # hashes, commits, numbers
STAMPED = re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}")  # Hydra's outputs/<date>/<time> folders
# results whose inputs hold a path, a port or the code's commit: those vary, not what llem measured
VARYING = {".identity.config_hash", ".identity.study_design_hash", ".config.study_job.config_hash",
           ".config.study_job.study_design_hash", ".environment.llem_git_commit", ".error.traceback"}
# lists whose length follows the run's timing (samples, warmup steps, warnings with measured figures)
ORDER: list[str] = []  # same keys, another order: the same JSON object, listed for information
FREE_LENGTH = {"warmup_latencies_s", "warnings", "notes", "errors", "selection", "files"}


def _kind(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def diff(a: Any, b: Any, path: str, root_a: str, root_b: str, out: list[str]) -> None:
    if path in VARYING:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):  # keyed by pid ("VLLM::EngineCore-1234"): compare with the digits masked
            ma, mb = {DIGITS.sub("#", k): v for k, v in a.items()}, {DIGITS.sub("#", k): v for k, v in b.items()}
            if len(ma) == len(a) and len(mb) == len(b):
                a, b = ma, mb
            elif all(k.isdigit() for k in (*a, *b)):  # keyed by bare pids: in order
                a, b = {str(i): v for i, v in enumerate(a.values())}, {str(i): v for i, v in enumerate(b.values())}
        if set(a) == set(b) and list(a) != list(b):
            ORDER.append(f"{path or '.'}: keys in another order ({', '.join(a)} -> {', '.join(b)})")
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}: only before")
            elif k not in a:
                out.append(f"{path}.{k}: only after")
            else:
                diff(a[k], b[k], f"{path}.{k}", root_a, root_b, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        key = path.rsplit(".", 1)[-1]
        if len(a) != len(b):
            if key not in FREE_LENGTH:
                out.append(f"{path}: {len(a)} items before, {len(b)} after")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", root_a, root_b, out)
        return
    if _kind(a) != _kind(b):
        if not (isinstance(a, (int, float)) or isinstance(b, (int, float))) or a is None or b is None:
            out.append(f"{path}: {a!r} before, {b!r} after")
        return
    if isinstance(a, str):
        ma = DIGITS.sub("#", a.replace(root_a, "ROOT").replace(REPOS[0], "REPO"))
        mb = DIGITS.sub("#", b.replace(root_b, "ROOT").replace(REPOS[1], "REPO"))
        if ma != mb:
            out.append(f"{path}: {a!r} before, {b!r} after")


REPOS = ["\0", "\0"]  # the two code trees, where they differ (tracebacks, paths): argv 3 and 4


def main(before: str, after: str, repo_before: str = "\0", repo_after: str = "\0") -> int:
    REPOS[:] = [repo_before, repo_after]
    ra, rb = Path(before), Path(after)
    pairs, missing, problems = 0, [], []
    after = {STAMPED.sub("*", str(f.relative_to(rb))): f for f in rb.rglob("result.json")}
    for fa in sorted(ra.rglob("result.json")):
        rel = STAMPED.sub("*", str(fa.relative_to(ra)))
        fb = after.get(rel)
        if fb is None:
            missing.append(str(rel))
            continue
        try:
            a, b = json.loads(fa.read_text()), json.loads(fb.read_text())
        except ValueError:
            continue
        pairs += 1
        found: list[str] = []
        diff(a, b, "", str(ra), str(rb), found)
        problems += [f"{rel}: {line}" for line in found]
    print(f"{pairs} result.json pairs compared; {len(missing)} only before; {len(problems)} differences")
    for m in missing:
        print(f"  only before: {m}")
    for p in problems:
        print(f"  {p}")
    for o in sorted(set(ORDER)):
        print(f"  (order only) {o}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
