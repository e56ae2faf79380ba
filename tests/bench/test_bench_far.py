"""bench/far.py runs end to end (one run, our proxy and HAProxy) and prints issue 19's table.

No speed is asserted (a test never asserts a wall-clock speed). This keeps the harness working: the
delayed link, code-server, the TLS fronts, Chromium in the namespace, the marker in the explorer,
and what the table reports of each proxy: HAProxy's HTTP/2 with the WebSockets inside it, our
proxy's HTTP/1.1 (until issue 19 lands), TLS 1.3 on both, and the connections counted on the link.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.hosts import namespaces_available

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.netns,
    pytest.mark.browser,
    pytest.mark.codeserver,
    pytest.mark.timeout(400),
]


def test_far_prints_the_table_for_dumont_and_haproxy(tmp_path: Path) -> None:
    why = namespaces_available()
    if why:
        pytest.fail(f"bench/far.py needs network namespaces (ip netns add): {why}")
    out = tmp_path / "far.json"
    argv = [sys.executable, "bench/far.py", "--smoke", "--runs", "1", "--warmup", "0",
            "--only", "dumont,haproxy", "--json", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=360)
    finally:
        if proc.poll() is None:
            proc.kill()  # the script's own finally blocks stop what it started
            proc.wait()
    assert proc.returncode == 0, f"bench/far.py failed:\n{stdout}\n{stderr}"
    header = next(line for line in stdout.splitlines() if line.startswith("| proxy"))
    assert [c.strip() for c in header.strip("|").split("|")][:7] == [
        "proxy", "protocol to the browser", "TLS", "conns cold", "conns warm", "cold s", "warm s",
    ]  # fmt: skip
    medians = json.loads(out.read_text())["median"]
    # Both carry the workbench and its WebSockets in HTTP/2 (RFC 8441), as issue 19 asks.
    assert medians["haproxy"]["protocol"] == "h2, WS inside"
    assert medians["dumont"]["protocol"] == "h2, WS inside"
    for name in ("haproxy", "dumont"):
        assert medians[name]["tls"] == "TLS 1.3"
        assert medians[name]["conns_cold"] >= 1
        assert medians[name]["cold_s"] > 0
    assert "Issue 19's bar for our proxy" in stdout
    assert "before:" in stdout
    assert "after:" in stdout
