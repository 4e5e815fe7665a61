"""llem.device.procs: a job's processes are it and all its descendants, with psutil and through /proc
alike (real child processes, no timing)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

import llem.device.procs as procs

# A child that starts a grandchild, prints both pids and waits for stdin to close.
TREE = ("import subprocess, sys; g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], "
        "stdin=subprocess.PIPE); print(g.pid, flush=True); sys.stdin.read(); g.stdin.close(); g.wait()")


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    child = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())  # type: ignore[union-attr]
        yield child.pid, grandchild
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=30)


def test_the_tree_holds_the_process_its_child_and_grandchild(tree: tuple[int, int]) -> None:
    import os

    child, grandchild = tree
    assert {os.getpid(), child, grandchild} <= procs.process_tree()
    assert procs.process_tree(child) == {child, grandchild}
    assert procs.process_tree(grandchild) == {grandchild}


def test_without_psutil_proc_gives_the_same_tree(tree: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    child, grandchild = tree
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` now fails
    assert procs.process_tree(child) == {child, grandchild}
    assert {child, grandchild} <= procs.process_tree()  # two levels down from this process


def test_a_gone_process_is_just_itself() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert procs.process_tree(p.pid) == {p.pid}
