"""Logs through the real CLI: one JSON object per line with --log-format json, every switch, hook
run, backend state change and sync change carrying its reason; no access log unless asked."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Proc, start_proxy

TOKEN = "log-token"


def call(proxy: Proc, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy.control_port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def get(proxy: Proc, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}{path}", timeout=5) as response:
        return json.load(response)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def output_of(proxy: Proc) -> list[str]:
    proxy.signal_group(signal.SIGTERM)
    proxy.popen.wait(timeout=20)
    assert proxy.popen.stdout is not None
    return proxy.popen.stdout.read().splitlines()


@pytest.mark.slow
def test_json_logs_carry_reasons(tmp_path: Path, upstream_processes: Callable[[str], Proc]) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    config = tmp_path / "dumont.toml"
    config.write_text(
        'failback = "manual"\n[health]\ninterval = 0.2\nfall = 2\nrise = 2\n'
        '[hooks]\non_failover = "echo fenced"\nbefore_failback = "echo no way; exit 3"\n'
    )
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        "--config", str(config), "--log-format", "json", "--admin-token", TOKEN,
    )  # fmt: skip
    try:
        assert get(proxy, "/x")["backend"] == "gpu"
        call(proxy, "PUT", "/admin/sync", {"state": "syncing", "lag_seconds": 0.3})
        call(proxy, "POST", "/admin/failover")
        assert get(proxy, "/x")["backend"] == "cpu"
        call(proxy, "PUT", "/admin/sync", {"state": "fenced", "lag_seconds": None})
        call(proxy, "POST", "/admin/failback")  # before_failback fails: the failback is abandoned
        wait_until(
            lambda: call(proxy, "GET", "/admin/status")["switches"][0]["outcome"] == "abandoned"
        )
        gpu.signal_group(signal.SIGKILL)
        wait_until(
            lambda: call(proxy, "GET", "/admin/status")["backends"]["primary"]["healthy"] is False
        )
    finally:
        lines = output_of(proxy)
        proxy.stop()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in entries)
    events: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        events.setdefault(e.get("event", ""), []).append(e)

    started = events["switch_started"][0]
    assert started["kind"] == "failover"
    assert started["reason"] == "admin: failover requested"
    finished = next(e for e in events["switch_finished"] if e["kind"] == "failover")
    assert finished["outcome"] == "completed"
    assert finished["duration_s"] is not None
    abandoned = next(e for e in events["switch_finished"] if e["kind"] == "failback")
    assert abandoned["outcome"] == "abandoned"
    assert "before_failback failed: exit 3: no way" in abandoned["detail"]
    hooks = {e["hook"]: e for e in events["hook_finished"]}
    assert hooks["on_failover"]["ok"] is True
    assert hooks["on_failover"]["detail"] == "fenced"
    assert hooks["before_failback"]["ok"] is False
    assert hooks["before_failback"]["level"] == "error"
    down = [e for e in events["health_changed"] if e["role"] == "primary" and not e["up"]]
    assert down
    assert down[0]["reason"]  # "connect failed: ..." or "passive: ..."
    assert [(e["from"], e["to"]) for e in events["sync_changed"]] == [
        ("unknown", "syncing"),
        ("syncing", "fenced"),
    ]
    assert [e for e in events["activate"] if e["to"] == "standby"]
    # Access logs are off by default.
    assert not [e for e in entries if e["logger"] == "aiohttp.access"]


@pytest.mark.slow
def test_access_log_when_asked_and_human_lines_by_default(
    upstream_processes: Callable[[str], Proc],
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}", f"http://127.0.0.1:{cpu.port}", "--access-log", "true"
    )
    try:
        get(proxy, "/some/path")
    finally:
        lines = output_of(proxy)
        proxy.stop()
    access = [line for line in lines if "aiohttp.access" in line]
    assert any("GET /some/path" in line for line in access), lines
    # Human format: a UTC timestamp, the level, the logger, the message; not JSON.
    assert all(not line.startswith("{") for line in lines)
    assert any(" WARNING dumont.workspace: routing to primary" in line for line in lines), lines
