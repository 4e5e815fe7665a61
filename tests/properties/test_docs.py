"""The docs site (mkdocs, docs/) and the README front door: a broken link fails the tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

README = REPO / "README.md"
COMMANDS = ("bash scripts/setup.sh && .venv/bin/python -m llem",
            "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q")


def _build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                                            "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    p = _build(REPO, tmp_path / "site")
    assert p.returncode == 0, p.stdout + p.stderr
    pages = {f.stem for f in (REPO / "docs").glob("*.md")}
    assert {"index", "install", "studies", "launcher", "energy", "backends", "serving", "results-schema",
            "benchmarks", "extending"} <= pages
    assert all((tmp_path / "site" / ("" if s == "index" else s) / "index.html").is_file() for s in pages)


@pytest.mark.slow
def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    for broken in ("[x](no-such-page.md)", "[x](studies.md#no-such-section)"):
        root = tmp_path / broken[-12:-1].replace("#", "_").replace(".", "_")
        shutil.copytree(REPO / "docs", root / "docs")
        shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
        with (root / "docs" / "install.md").open("a") as f:
            f.write(f"\nSee {broken}.\n")
        p = _build(root, root / "site")
        assert p.returncode != 0 and "install.md" in p.stdout + p.stderr, broken


def test_readme_is_a_front_door_with_the_two_commands_verbatim() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for command in COMMANDS:
        assert f"\n{command}\n" in text, command
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in ci  # CI runs the README's test command


def test_readme_links_resolve() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 10
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.is_file(), link
        if anchor:  # a heading of that page, as mkdocs' toc slugs it
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", target.read_text(), re.M)}
            assert anchor in slugs, link


def test_every_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").glob("*.md"):
        assert f": {page.name}" in nav, page.name
