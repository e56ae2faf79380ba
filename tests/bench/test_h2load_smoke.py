"""bench/h2load.py runs end to end in quick mode against our proxy and HAProxy and prints its
table. No speed is asserted (the script's own exit status says whether the bars were met, and
this test accepts either): this only keeps the script working."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.load]


def test_h2load_quick_prints_both_proxies(tmp_path: Path) -> None:
    for tool in ("h2load", "haproxy", "nginx"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-debian-deps.sh)")
    out = tmp_path / "h2load.json"
    proc = subprocess.Popen(
        [sys.executable, "bench/h2load.py", "--quick", "--json", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()  # the script's own finally blocks stop what it started
    assert proc.returncode in (0, 1), f"h2load.py failed:\n{stdout}\n{stderr}"
    assert "| haproxy" in stdout
    assert "| dumont" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert rows["dumont"]["many_failed"] == 0
    assert rows["dumont"]["req_s"] > 0
