"""A real Prometheus (Debian's) scrapes the real CLI proxy; the alert rules pass promtool."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.ports import free_port
from tests.support.processes import Proc, start_proxy

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(), reason="Debian's prometheus is not installed"
)


def test_alert_rules_pass_promtool() -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    example = subprocess.run(
        [PROMTOOL, "check", "config", str(REPO / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert example.returncode == 0, example.stdout + example.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], Proc]]:
    started: list[Proc] = []

    def start(target_port: int) -> Proc:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        shutil.copy(ALERTS, tmp_path / "alerts.yml")
        config.write_text(
            "global:\n"
            "  scrape_interval: 500ms\n"
            "  evaluation_interval: 500ms\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: dumont\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        log = (tmp_path / "prometheus.log").open("w")
        popen = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=tmp_path,
        )
        log.close()
        proc = Proc(popen, port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def query(session: aiohttp.ClientSession, prom: Proc, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{prom.port}/api/v1/query"
    async with session.get(url, params={"query": promql}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def eventually(
    session: aiohttp.ClientSession,
    prom: Proc,
    promql: str,
    check: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = await query(session, prom, promql)
        except aiohttp.ClientError:
            result = []  # Prometheus still starting
        if check(result):
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"{promql} never satisfied the check; last result: {result}")


def by_role(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["role"]: float(r["value"][1]) for r in result}


@pytest.mark.slow
async def test_prometheus_sees_backends_and_a_forced_failover(
    prometheus: Callable[[int], Proc], upstream_processes: Callable[[str], Proc]
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        "--health-interval",
        "0.25",
        "--fall",
        "2",
    )
    try:
        prom = prometheus(proxy.control_port)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            up = await eventually(
                s, prom, 'dumont_backend_up{job="dumont"}', lambda r: by_role(r) == {
                    "primary": 1.0, "standby": 1.0
                }
            )  # fmt: skip
            assert {r["metric"]["backend"] for r in up} == {"gpu", "cpu"}
            gpu.signal_group(signal.SIGKILL)  # a loud death: connections refused
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                async with s.get(f"http://127.0.0.1:{proxy.port}/after") as r:
                    if r.status == 200 and (await r.json())["backend"] == "cpu":
                        break
                await asyncio.sleep(0.05)
            switched = await eventually(
                s,
                prom,
                'dumont_switches_total{job="dumont",from="primary",to="standby"}',
                lambda r: sum(float(x["value"][1]) for x in r) >= 1,
            )
            counted = {x["metric"]["reason"]: float(x["value"][1]) for x in switched}
            # Every reason is exported from the start at 0; this switch was the health checks'
            # (or the failing requests') doing.
            assert counted["admin"] == counted["recovery"] == 0.0
            assert counted["health_check"] + counted["passive"] == 1.0
            await eventually(
                s,
                prom,
                'dumont_backend_up{job="dumont"}',
                lambda r: by_role(r) == {"primary": 0.0, "standby": 1.0},
            )
            await eventually(
                s,
                prom,
                'dumont_switch_duration_seconds_count{job="dumont",kind="failover"}',
                lambda r: bool(r) and float(r[0]["value"][1]) == 1.0,
            )
            # The alert rules are loaded and evaluated: the primary's alert is pending (for: 1m).
            await eventually(
                s, prom, 'ALERTS{alertname="DumontPrimaryDown"}', lambda r: len(r) == 1
            )
            # Every query of the Grafana dashboard is valid PromQL to this Prometheus.
            for expr in grafana_queries():
                await query(s, prom, expr)
    finally:
        proxy.stop()


def grafana_queries() -> list[str]:
    board = json.loads((REPO / "deploy" / "grafana" / "dumont-proxy.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in board["annotations"]["list"]]
    assert len(exprs) > 10
    # Grafana's variables, as Grafana would substitute them.
    return [e.replace("$instance", ".*").replace("$__range", "1h") for e in exprs]
