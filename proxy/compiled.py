"""Which build of the data plane this process runs: the one mypyc compiled, or the sources.

`make` compiles proxy/dataplane/ with mypyc (scripts/compile_dataplane.py): C extension modules
beside the sources, about a fifth less CPU per forwarded request (docs/BENCHMARKS.md). Python
imports an extension module before a source file of the same name, so a build older than the
sources would run old code without a word. The build therefore writes a manifest (a digest of each
source under proxy/, since the compiled code relies on the types of what it imports), and the
package's `__init__` calls `choose_build` before any of its modules is imported. When there is no
build, when the manifest differs from the sources, or when DUMONT_PURE_PYTHON=1 is set, the
package's directory imports from its sources only, and `BUILDS` says why for the startup log.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader
from pathlib import Path

__all__ = [
    "BUILDS",
    "MANIFEST_NAME",
    "PURE_ENV",
    "Build",
    "choose_build",
    "manifest_for",
    "source_digests",
    "this_python",
]

PURE_ENV = "DUMONT_PURE_PYTHON"
MANIFEST_NAME = "compiled.json"
PROXY_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Build:
    package: str
    compiled: bool
    reason: str

    def describe(self) -> str:
        return f"{self.package}: {self.reason}"


BUILDS: dict[str, Build] = {}


def source_digests(root: Path = PROXY_DIR) -> dict[str, str]:
    """SHA-256 of every Python source under `root`, by path relative to it."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.py"))
    }


def this_python() -> str:
    """The interpreter a build is for, to the patch release: compiled code uses CPython's
    internals, which only the same release is sure to share."""
    return f"{sys.implementation.name} {platform.python_version()}"


def manifest_for(digests: dict[str, str]) -> dict[str, object]:
    """What the build writes beside the extension modules it made."""
    return {"python": this_python(), "sources": digests}


def _why_not_compiled(directory: Path) -> str | None:
    """Why the package must run from its sources, or None when its build is current."""
    if not any(directory.glob("*.so")):
        return "no compiled build; `make` makes one"
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as exc:
        return f"the build's manifest: {exc}"
    if (built_for := manifest.get("python")) != this_python():
        return f"built for {built_for}, this is {this_python()}"
    built = manifest.get("sources")
    built = built if isinstance(built, dict) else {}
    current = source_digests()
    if built == current:
        return None
    changed = sorted(k for k in current.keys() | built.keys() if current.get(k) != built.get(k))
    more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
    return f"changed since the build: proxy/{changed[0]}{more}; `make` rebuilds"


def choose_build(package: str, directory: str) -> Build:
    """Call from a compiled package's `__init__`, with its `__name__` and `__path__[0]`."""
    why = _why_not_compiled(Path(directory))
    build = Build(
        package, why is None, f"running from sources ({why})" if why else "compiled with mypyc"
    )
    if not build.compiled:
        # The path-based finder asks sys.path_importer_cache for the finder of each directory of a
        # package's __path__ before making one; this one knows source files only, so the stale
        # extension modules beside them are never imported.
        sys.path_importer_cache[directory] = FileFinder(
            directory, (SourceFileLoader, SOURCE_SUFFIXES)
        )
    BUILDS[package] = build
    return build
