"""The benchmark scripts run end to end in quick mode against our proxy and print their tables.

No speed is asserted: a test never asserts a wall-clock speed. This only keeps the scripts working.
Both scripts start together (they measure nothing here, so they may share the cores), which keeps
the pair well under a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("throughput.py", "failover.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, Path]]]:
    """Each script's stdout (once it exited 0) and its JSON file."""
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-debian-deps.sh)")
    out_dir = tmp_path_factory.mktemp("bench")
    procs = {
        script: subprocess.Popen(
            [sys.executable, f"bench/{script}", "--quick", "--only", "dumont",
             "--json", str(out_dir / f"{script}.json")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        for script in SCRIPTS
    }  # fmt: skip
    results = {}
    try:
        for script, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=55)
            assert proc.returncode == 0, f"{script} failed:\n{stdout}\n{stderr}"
            results[script] = (stdout, out_dir / f"{script}.json")
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()  # the script's own finally blocks stop what it started
                proc.wait()


def _header(table_output: str) -> list[str]:
    line = next(line for line in table_output.splitlines() if line.startswith("| proxy"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _rows(table_output: str) -> list[str]:
    lines = [line for line in table_output.splitlines() if line.startswith("| ")]
    return [line.strip("|").split("|")[0].strip() for line in lines[1:]]


def test_throughput_quick_prints_the_table(runs: dict[str, tuple[str, Path]]) -> None:
    out, json_path = runs["throughput.py"]
    assert _header(out) == [
        "proxy", "req/s", "p50 ms", "p99 ms", "CPU us/req", "WS p50 us", "WS p99 us", "WS +p50 us",
        "bulk MB/s", "RSS idle MB", "RSS after MB",
    ]  # fmt: skip
    assert _rows(out) == ["direct", "dumont"]
    medians = json.loads(json_path.read_text())["median"]
    assert medians["dumont"]["req_s"] > 0


def test_failover_quick_prints_the_table(runs: dict[str, tuple[str, Path]]) -> None:
    out, json_path = runs["failover.py"]
    assert _header(out) == [
        "proxy",
        *(f"{death} {what}" for death in ("loud", "silent")
          for what in ("switch s", "failed", "longest s", "flaps")),
    ]  # fmt: skip
    assert _rows(out) == ["dumont"]
    medians = json.loads(json_path.read_text())["median"]
    assert set(medians["dumont"]) >= {"loud_switch_s", "silent_switch_s"}
