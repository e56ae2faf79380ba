"""Compile the data plane (proxy/dataplane/) with mypyc, in place; `make` runs this.

The modules are strictly typed already, so mypyc turns them into C extension modules unchanged:
native classes, attribute access by offset, direct calls between them. That takes about a fifth
of the CPU off each forwarded request (docs/BENCHMARKS.md). proxy/compiled.py decides at import
whether the build is current; this script writes the manifest it checks, and only after the build
succeeded, so a failed build leaves the sources in charge.

    .venv/bin/python scripts/compile_dataplane.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mypyc.build import mypycify  # noqa: E402  (after the path: the repo's proxy package)
from setuptools import setup  # noqa: E402

from proxy.compiled import MANIFEST_NAME, manifest_for, source_digests  # noqa: E402

PACKAGE = REPO / "proxy" / "dataplane"
GROUP = "proxy.dataplane.compiled"  # the shared library lands in the package, not the repo root


def missing_toolchain() -> str | None:
    """Why this machine cannot compile C extensions, or None."""
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler (cc)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers})"
    return None


def main() -> int:
    os.chdir(REPO)
    if (why := missing_toolchain()) is not None:
        # make demo on a bare machine still works, on the sources (proxy/compiled.py says so).
        print(f"not compiling the data plane: {why}; the proxy runs from its sources")
        return 0
    manifest = PACKAGE / MANIFEST_NAME
    manifest.unlink(missing_ok=True)
    for old in PACKAGE.glob("*.so"):
        old.unlink()
    digests = source_digests()
    # __init__ stays a source file: it chooses between the build and the sources.
    modules = sorted(
        p.relative_to(REPO).as_posix() for p in PACKAGE.glob("*.py") if p.name != "__init__.py"
    )
    setup(
        name="dumont-dataplane",
        packages=[],
        ext_modules=mypycify(modules, group_name=GROUP, opt_level="3", target_dir="build/mypyc"),
        script_args=["--quiet", "build_ext", "--inplace", "--build-temp", "build/mypyc/temp"],
    )
    manifest.write_text(json.dumps(manifest_for(digests), indent=1) + "\n")
    print(f"compiled {len(modules)} modules of proxy/dataplane with mypyc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
