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
pytestmark = [pytest.mark.slow, pytest.mark.load]


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


def _header(table_output: str, table: int = 0) -> list[str]:
    lines = [line for line in table_output.splitlines() if line.startswith("| proxy")]
    return [cell.strip() for cell in lines[table].strip("|").split("|")]


def _rows(table_output: str, table: int = 0) -> list[str]:
    tables = table_output.split("\n\n")
    text = [t for t in tables if t.startswith("| proxy")][table]
    lines = [line for line in text.splitlines() if line.startswith("| ")]
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


def test_throughput_quick_holds_idle_connections(runs: dict[str, tuple[str, Path]]) -> None:
    """Issue 13's idle phase: its own table (no direct row) and cells in the JSON."""
    out, json_path = runs["throughput.py"]
    assert _header(out, table=1) == [
        "proxy", "held at end", "errors", "RSS held MB", "req/s held", "open s",
    ]  # fmt: skip
    assert _rows(out, table=1) == ["dumont"]
    payload = json.loads(json_path.read_text())
    assert payload["settings"]["idle_connections"] == 1000
    dumont = payload["median"]["dumont"]
    assert 0 <= dumont["idle_open_end"] <= 1000
    assert dumont["idle_rss_mb"] > 0
    assert dumont["idle_errors"] >= 0


def test_throughput_quick_checks_issue_13_bars(runs: dict[str, tuple[str, Path]]) -> None:
    """The ratio bars name their peer; with only our proxy running they cannot be judged."""
    out, json_path = runs["throughput.py"]
    bars = {bar["bar"]: bar for bar in json.loads(json_path.read_text())["bars"]}
    half_haproxy = bars["req/s at least 0.5x HAProxy's"]
    assert half_haproxy["peer"] == "haproxy"
    assert half_haproxy["factor"] == 0.5
    assert half_haproxy["met"] is None  # HAProxy did not run
    assert bars["req/s at least 2.5x Caddy's"]["factor"] == 2.5
    assert bars["p99 at most 2x HAProxy's (ms)"]["factor"] == 2.0
    assert bars["download at least 1.0x nginx's MB/s"]["peer"] == "nginx"
    cpu = bars["CPU per request at most 30 us"]
    assert cpu["reference"] == 30.0
    assert isinstance(cpu["met"], bool)
    assert bars["1,000 idle connections all still open"]["reference"] == 1000.0
    assert "RSS while holding them under 250 MB" in bars
    assert "n/a  req/s at least 0.5x HAProxy's" in out


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
