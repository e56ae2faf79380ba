"""bench/soak.py end to end, briefly: 600 WebSockets (more than the HTTP pool's 512, which once
starved every HTTP request) and an HTTP load for 20 s. No speed is asserted, only its bars."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.load]


def test_soak_script_holds_its_bars_briefly(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    soak = subprocess.Popen(
        [sys.executable, "bench/soak.py", "--seconds", "20", "--websockets", "600",
         "--workers", "4", "--json", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, _ = soak.communicate(timeout=85)
    finally:
        if soak.poll() is None:  # SIGTERM lets the script kill the groups it started
            os.killpg(soak.pid, signal.SIGTERM)
            try:
                soak.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(soak.pid, signal.SIGKILL)
                soak.wait(5)
    assert soak.returncode == 0, stdout[-3000:]
    report = json.loads(out.read_text())
    assert all(bar["ok"] for bar in report["bars"]), report["bars"]
    assert "RSS MB" in stdout
