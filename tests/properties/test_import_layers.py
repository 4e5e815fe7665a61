"""The import graph keeps its layers (DEVELOPERS.md "Layers"): parsed with ast, nothing imported, so
this runs in milliseconds. Every `import` and `from ... import` counts, also inside functions (a lazy
import still ties the two modules), except under `if TYPE_CHECKING:`.

Rules:
- the process supervisor (`llem/launch/`) imports nothing of the study, search, results, report or
  the Hydra plugins, and no Hydra/OmegaConf: what a study adds comes through `llem.launch.contract`;
- the study side (`llem/study/`) sees the launcher only through that contract;
- `llem/models/` imports nothing of `llem.config` (config's preflight imports models, not back);
- nothing in `llem/` imports `hydra_plugins` (the plugins are adapters over llem, not under it);
- the core and the adapters never import the outputs (`llem.results`, `llem.report`);
- pure modules import no torch, transformers, vllm, Hydra, OmegaConf or NVML at module level.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "vllm", "hydra", "omegaconf", "pynvml", "amdsmi")
PURE = ("llem/config/schema.py", "llem/config/validate.py", "llem/study/*.py", "llem/measure/*.py",
        "llem/result.py", "llem/errors.py", "llem/launch/contract.py", "llem/launch/settings.py",
        "llem/launch/progress.py")
OUTPUTS = ("llem.results", "llem.report")


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(node: ast.AST, top: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        yield child, inner
        yield from _walk(child, inner)


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(module, at module level, line) for every import in `path`; relative imports made absolute."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found = []
    for node, top in _walk(ast.parse(path.read_text(), str(path)), True):
        if isinstance(node, ast.Import):
            found += [(a.name, top, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
            found.append((base, top, node.lineno))
            found += [(f"{base}.{a.name}", top, node.lineno) for a in node.names]  # `from llem import study`
    return found


def files(*patterns: str) -> list[Path]:
    return sorted({p for pat in patterns for p in ROOT.glob(pat)})


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(patterns: tuple[str, ...], banned: tuple[str, ...], top_only: bool = False,
               allowed: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in files(*patterns):
        for module, top, line in imports(path):
            if (top or not top_only) and under(module, *banned) and not under(module, *allowed):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


RULES = {
    "launch imports no study, search, outputs, plugins or Hydra": (
        ("llem/launch/**/*.py",), ("llem.study", "llem.search", *OUTPUTS, "hydra_plugins", "hydra", "omegaconf"),
        False, ()),
    "study sees the launcher only through its contract": (
        ("llem/study/**/*.py",), ("llem.launch",), False, ("llem.launch.contract",)),
    "models import nothing of config": (("llem/models/**/*.py",), ("llem.config",), False, ()),
    "llem never imports the Hydra plugins": (("llem/**/*.py",), ("hydra_plugins",), False, ()),
    "core and adapters never import the outputs": (
        ("llem/config/**/*.py", "llem/study/**/*.py", "llem/measure/**/*.py", "llem/launch/**/*.py",
         "llem/backends/**/*.py", "llem/energy/**/*.py", "llem/device/**/*.py", "llem/gpu/**/*.py",
         "llem/serving/**/*.py", "llem/models/**/*.py", "llem/result.py", "llem/job.py", "llem/io.py",
         "llem/errors.py"), OUTPUTS, False, ()),
    "pure modules import nothing heavy at module level": (PURE, HEAVY, True, ()),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_import_rule(rule: str) -> None:
    patterns, banned, top_only, allowed = RULES[rule]
    assert files(*patterns), f"{rule}: no files match {patterns}"
    found = violations(patterns, banned, top_only, allowed)
    assert not found, f"{rule}:\n  " + "\n  ".join(found)


def test_the_checker_sees_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    """The parser itself bites: a lazy import, a relative one and `from llem import study` are found;
    a TYPE_CHECKING import is not."""
    probe = ROOT / "llem" / "launch" / "_probe_for_test_import_layers.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import llem.results\n"
                     "def f():\n    from ..study import lock\n    from llem import search\n    import torch\n")
    try:
        found = {m: top for m, top, _ in imports(probe)}
        assert found.get("llem.study") is False and "llem.study.lock" in found
        assert "llem.search" in found and found.get("torch") is False
        assert "llem.results" not in found
        assert len(violations(("llem/launch/_probe_for_test_import_layers.py",), ("llem.study",))) == 2
        assert not violations(("llem/launch/_probe_for_test_import_layers.py",), ("torch",), top_only=True)
    finally:
        probe.unlink()


def test_moved_launcher_keys_match_the_launcher_settings() -> None:
    from llem.config.overrides import MOVED_KEYS
    from llem.launch.settings import LaunchSettings

    assert {f"study.{k}": f"hydra.launcher.{k}" for k in LaunchSettings.names()} == MOVED_KEYS
