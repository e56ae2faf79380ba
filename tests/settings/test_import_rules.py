"""dumont_settings stands below both commands: proxy/ and provisioning/ may import it, it imports
neither, and only the standard library, since the GPU's snapshot agent (a zipapp run by a bare
python3) carries it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import dumont_settings

PACKAGE = Path(dumont_settings.__file__).resolve().parent


def test_the_settings_layer_imports_only_the_standard_library() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                    "dumont_settings",
                    "__future__",
                ):
                    found.append(f"{path.name}:{node.lineno} imports {module}")
    assert found == []


def test_the_gpu_agent_archive_carries_the_settings_layer() -> None:
    import io
    import zipfile

    from provisioning.remote_snapshot import agent_archive

    names = set(zipfile.ZipFile(io.BytesIO(agent_archive())).namelist())
    assert {f"dumont_settings/{p.name}" for p in PACKAGE.glob("*.py")} <= names
    assert "provisioning/retry.py" in names
