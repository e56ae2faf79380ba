"""The import rules docs/ARCHITECTURE.md states, checked on every module's imports (parsed, not
imported): a rule written only in prose is broken by the first hurried change."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module


def _violations(
    folder: str, allowed: tuple[str, ...] = (), banned: tuple[str, ...] = ()
) -> list[str]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")
            names = {".".join(top[: i + 1]) for i in range(len(top))}
            if allowed and not names & set(allowed):
                found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            if banned and names & set(banned):
                found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


def test_the_failover_core_imports_nothing_that_does_io() -> None:
    pure = ("__future__", "enum", "dataclasses", "typing", "collections", "proxy.failover")
    assert _violations("proxy/failover", allowed=pure) == []


def test_the_data_plane_reaches_decisions_only_through_the_router() -> None:
    banned = ("proxy.workspace", "proxy.server", "proxy.failover", "aiohttp")
    assert _violations("proxy/dataplane", banned=banned) == []


def test_provisioning_never_imports_the_proxy() -> None:
    """Only the settings layer both commands share (it imports nothing else of proxy/)."""
    found = _violations("provisioning", banned=("proxy",))
    shared = re.compile(r".* imports proxy\.settings(\.\w+)?$")
    assert [v for v in found if not shared.fullmatch(v)] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .events import Cause", "proxy.failover.events"),
        ("from . import machine", "proxy.failover"),
        ("import asyncio", "asyncio"),
    ],
)
def test_the_checker_resolves_relative_imports(
    tmp_path: Path, source: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules above would pass vacuously if relative imports were misread."""
    folder = tmp_path / "proxy" / "failover"
    folder.mkdir(parents=True)
    (folder / "probe.py").write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert [module for _, module in _imports(folder / "probe.py")] == [expected]
