"""bench/workspaces.py runs end to end with 20 workspaces in quick mode and prints its tables.

No speed is asserted (a test never asserts a wall-clock speed); this keeps the script working:
its phases run, its tables have their columns, every bar is judged, and nothing a correct proxy
does (another workspace's backend answering, an answer missing for a Host) shows up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.load]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-debian-deps.sh)")
    out = tmp_path_factory.mktemp("bench") / "workspaces.json"
    argv = [sys.executable, "bench/workspaces.py", "--quick", "--workspaces", "20",
            "--json", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=110)
    finally:
        if proc.poll() is None:
            proc.kill()  # the script's own finally blocks stop what it started
            proc.wait()
    assert proc.returncode == 0, f"bench/workspaces.py failed:\n{stdout}\n{stderr}"
    return stdout, json.loads(out.read_text())


def _headers(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("| ")
        and "---" not in line
        and line.split("|")[1].strip() in ("proxy", "window", "death", "run")
    ]


def test_every_phase_prints_its_table(run: tuple[str, dict[str, object]]) -> None:
    stdout, _ = run
    titles = [header[0] for header in _headers(stdout)]
    assert titles == ["proxy", "window", "death", "death", "run", "proxy"]
    assert "20 workspaces" in stdout
    assert "1 workspace, 20 Host spellings" in stdout


def test_the_json_has_each_phase(run: tuple[str, dict[str, object]]) -> None:
    _, payload = run
    scale = payload["scale"]
    assert isinstance(scale, dict)
    assert scale["startup_s"] > 0
    assert scale["rss_mb"] > 0
    assert scale["probes_per_s"] > 0
    kills = payload["kills"]
    assert isinstance(kills, dict)
    assert set(kills) == {"loud", "silent"}
    for rows in kills.values():
        (row,) = rows
        # What a correct proxy never does, however slow the machine: an answer for one Host
        # from another workspace's backend, or a Host of the others that got no answer at all.
        assert row["others_wrong_backend"] == 0
        assert row["others_unanswered_hosts"] == 0
    assert len(payload["adds"]) == 1  # type: ignore[arg-type]
    assert len(payload["routing_runs"]) == 1  # type: ignore[arg-type]


def test_every_bar_is_judged(run: tuple[str, dict[str, object]]) -> None:
    _, payload = run
    bars = payload["bars"]
    assert isinstance(bars, list)
    assert len(bars) == 18
    assert all(isinstance(bar["met"], bool) for bar in bars), bars
