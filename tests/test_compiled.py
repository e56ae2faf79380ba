"""The compiled data plane is used only while it matches the sources (proxy/compiled.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import proxy.dataplane
from proxy.compiled import BUILDS, MANIFEST_NAME, PURE_ENV, this_python

PROXY = Path(proxy.dataplane.__file__).resolve().parent.parent
BUILT = any((PROXY / "dataplane").glob("*.so")) and (PROXY / "dataplane" / MANIFEST_NAME).exists()
EXPECTED = os.environ.get("DUMONT_EXPECT_COMPILED") == "1"  # set by `make check` and `make test`

needs_build = pytest.mark.skipif(
    not BUILT and not EXPECTED, reason="no compiled data plane here (`make` builds one)"
)

PROBE = (
    "import proxy.dataplane.plain as m, proxy.compiled as c;"
    "print(m.__file__); print(c.BUILDS['proxy.dataplane'].reason)"
)


def _imports(root: Path, **env: str) -> tuple[str, str]:
    """Which file `proxy.dataplane.plain` comes from under `root`, and why."""
    clean = {k: v for k, v in os.environ.items() if k not in (PURE_ENV, "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=root, env={**clean, "PYTHONPATH": str(root), **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    where, reason = done.stdout.splitlines()
    assert Path(where).is_relative_to(root), (where, root)
    return Path(where).name, reason


@pytest.fixture
def copy_of_the_build(tmp_path: Path) -> Path:
    shutil.copytree(PROXY, tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@needs_build
def test_the_suite_runs_the_build_make_compiled() -> None:
    build = BUILDS["proxy.dataplane"]
    if os.environ.get(PURE_ENV):
        assert not build.compiled
        assert PURE_ENV in build.reason
    else:
        assert build.compiled, build.reason
        assert str(proxy.dataplane.__file__).endswith("__init__.py")  # it chooses the build
        from proxy.dataplane import connection

        assert str(connection.__file__).endswith(".so")


@needs_build
def test_a_current_build_is_imported(copy_of_the_build: Path) -> None:
    name, reason = _imports(copy_of_the_build)
    assert name.startswith("plain.cpython-")
    assert name.endswith(".so")
    assert reason == "compiled with mypyc"


@needs_build
def test_the_sources_are_imported_when_asked(copy_of_the_build: Path) -> None:
    assert _imports(copy_of_the_build, **{PURE_ENV: "1"}) == (
        "plain.py",
        f"running from sources ({PURE_ENV} is set)",
    )
    assert _imports(copy_of_the_build, **{PURE_ENV: "0"})[0].endswith(".so")


@needs_build
def test_a_build_older_than_any_source_under_proxy_is_not_imported(copy_of_the_build: Path) -> None:
    # Not a data plane module: the compiled code relies on the types of what it imports.
    with (copy_of_the_build / "proxy" / "headers.py").open("a") as source:
        source.write("\n# changed after the build\n")
    name, reason = _imports(copy_of_the_build)
    assert name == "plain.py"
    assert (
        reason
        == "running from sources (changed since the build: proxy/headers.py; `make` rebuilds)"
    )


@needs_build
def test_a_build_for_another_python_release_is_not_imported(copy_of_the_build: Path) -> None:
    manifest = copy_of_the_build / "proxy" / "dataplane" / MANIFEST_NAME
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**recorded, "python": "cpython 3.11.0"}))
    name, reason = _imports(copy_of_the_build)
    assert name == "plain.py"
    assert reason == f"running from sources (built for cpython 3.11.0, this is {this_python()})"


@needs_build
def test_a_build_without_its_manifest_is_not_imported(copy_of_the_build: Path) -> None:
    (copy_of_the_build / "proxy" / "dataplane" / MANIFEST_NAME).unlink()
    name, reason = _imports(copy_of_the_build)
    assert name == "plain.py"
    assert reason.startswith("running from sources (the build's manifest: ")


def test_without_a_build_the_sources_run(tmp_path: Path) -> None:
    shutil.copytree(
        PROXY,
        tmp_path / "proxy",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", MANIFEST_NAME),
    )
    assert _imports(tmp_path) == (
        "plain.py",
        "running from sources (no compiled build; `make` makes one)",
    )
