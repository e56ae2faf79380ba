"""The benchmark scripts run end to end in quick mode against our proxy and print their tables.

No speed is asserted: a test never asserts a wall-clock speed. This only keeps the scripts working.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(script: str, json_path: Path) -> str:
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-debian-deps.sh)")
    done = subprocess.run(
        [
            sys.executable,
            f"bench/{script}",
            "--quick",
            "--only",
            "dumont",
            "--json",
            str(json_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _header(table_output: str) -> list[str]:
    line = next(line for line in table_output.splitlines() if line.startswith("| proxy"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _rows(table_output: str) -> list[str]:
    lines = [line for line in table_output.splitlines() if line.startswith("| ")]
    return [line.strip("|").split("|")[0].strip() for line in lines[1:]]


def test_throughput_quick_prints_the_table(tmp_path: Path) -> None:
    out = _run("throughput.py", tmp_path / "throughput.json")
    assert _header(out) == [
        "proxy", "req/s", "p50 ms", "p99 ms", "WS p50 us", "WS p99 us", "WS +p50 us",
        "bulk MB/s", "RSS idle MB", "RSS after MB",
    ]  # fmt: skip
    assert _rows(out) == ["direct", "dumont"]
    medians = json.loads((tmp_path / "throughput.json").read_text())["median"]
    assert medians["dumont"]["req_s"] > 0


def test_failover_quick_prints_the_table(tmp_path: Path) -> None:
    out = _run("failover.py", tmp_path / "failover.json")
    assert _header(out) == [
        "proxy",
        *(f"{death} {what}" for death in ("loud", "silent")
          for what in ("switch s", "failed", "longest s", "flaps")),
    ]  # fmt: skip
    assert _rows(out) == ["dumont"]
    medians = json.loads((tmp_path / "failover.json").read_text())["median"]
    assert set(medians["dumont"]) >= {"loud_switch_s", "silent_switch_s"}
