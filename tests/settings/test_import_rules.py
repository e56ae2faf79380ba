"""proxy.settings stands below both commands: proxy/ and provisioning/ may import it, it imports
nothing else of proxy/ and nothing of provisioning/, only the standard library, since the GPU's
snapshot agent (a zipapp run by a bare python3) carries it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import proxy.settings

PACKAGE = Path(proxy.settings.__file__).resolve().parent


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
                inside = module == "proxy.settings" or module.startswith("proxy.settings.")
                if top not in sys.stdlib_module_names and top != "__future__" and not inside:
                    found.append(f"{path.name}:{node.lineno} imports {module}")
    assert found == []


def test_the_gpu_agent_archive_carries_the_settings_layer() -> None:
    import io
    import zipfile

    from provisioning.remote_snapshot import agent_archive

    names = set(zipfile.ZipFile(io.BytesIO(agent_archive())).namelist())
    assert {f"proxy/settings/{p.name}" for p in PACKAGE.glob("*.py")} <= names
    assert "proxy/__init__.py" in names
    assert "provisioning/retry.py" in names
