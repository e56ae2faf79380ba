"""Metrics, the sync report, the status JSON and the savings arithmetic, on an in-process proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import PricesConfig
from proxy.dashboard.savings import SavingsLedger, savings
from proxy.dashboard.table import render_status
from proxy.pages import TipCounts
from proxy.server import ProxyServer
from tests.support.proxies import ProxyFactory, Upstreams, control_url, public_url, url_of

TOKEN = "metrics-token"
REPO = Path(__file__).resolve().parents[2]


async def scrape(server: ProxyServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(control_url(server) / "metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


async def wait_until(server: ProxyServer, predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await server.workspace.changed(0.05)


async def test_requests_backends_and_bounded_labels(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))
    base = public_url(server)
    async with aiohttp.ClientSession() as s:
        for path in ("/a", "/b?x=1", "/c/%2e%2e/secret"):
            async with s.get(base / path.lstrip("/"), headers={"X-Forwarded-For": "1.2.3.4"}) as r:
                await r.read()
        async with s.request("PROPFIND", base / "pot") as r:
            await r.read()
        async with s.post(base / "echo", data=b"x" * 1000) as r:
            await r.read()
    samples = await scrape(server)
    assert value(samples, "dumont_backend_up", backend="gpu", role="primary") == 1.0
    assert value(samples, "dumont_backend_up", backend="cpu", role="standby") == 1.0
    assert value(samples, "dumont_backend_active", backend="gpu", role="primary") == 1.0
    assert value(samples, "dumont_state", state="serving_primary") == 1.0
    assert (
        value(samples, "dumont_http_requests_total", backend="gpu", method="GET", code="2xx") == 3
    )
    assert (
        sum(
            v
            for (n, labels), v in samples.items()
            if n == "dumont_http_requests_total" and ("method", "OTHER") in labels
        )
        == 1
    )
    assert value(samples, "dumont_http_request_duration_seconds_count", backend="gpu") == 5
    assert (
        value(samples, "dumont_relayed_bytes_total", direction="upstream", protocol="http") >= 1000
    )
    assert value(samples, "dumont_health_checks_total", backend="gpu", result="ok") >= 1
    # Bounded labels: no path, query or client address anywhere in the exposition.
    label_values = {v for (_n, labels) in samples for _k, v in labels}
    assert not {v for v in label_values if "/" in v or "1.2.3.4" in v or "PROPFIND" in v}


async def test_switch_counted_with_reason_and_duration(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))
    await gpu.close()  # connections refused: the health checks fail
    await wait_until(server, lambda: server.workspace.machine.active == "standby")
    async with aiohttp.ClientSession() as s, s.get(public_url(server) / "after") as r:
        assert (await r.json())["backend"] == "cpu"
    samples = await scrape(server)
    assert (
        value(
            samples,
            "dumont_switches_total",
            **{"from": "primary", "to": "standby", "reason": "health_check"},
        )
        == 1.0
    )
    assert value(samples, "dumont_switch_duration_seconds_count", kind="failover") == 1.0
    duration = value(samples, "dumont_switch_duration_seconds_sum", kind="failover")
    record = server.workspace.machine.history[-1]
    # From the first failed check to the first request the standby served: at least the
    # machine's own switch time.
    assert record.duration is not None
    assert duration >= record.duration
    assert value(samples, "dumont_backend_up", backend="gpu", role="primary") == 0.0
    assert value(samples, "dumont_health_checks_total", backend="gpu", result="failed") >= 2


async def test_admin_switch_and_sync_report(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN)
    control = control_url(server)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.put(
            control / "admin/sync", json={"state": "syncing", "lag_seconds": 0.8}
        ) as r:
            assert r.status == 401
        for bad in ({"state": "sideways"}, {"state": "syncing", "lag_seconds": -1}, ["x"]):
            async with s.put(control / "admin/sync", json=bad, headers=auth) as r:
                assert r.status == 400, bad
        async with s.put(
            control / "admin/sync", json={"state": "syncing", "lag_seconds": 0.8}, headers=auth
        ) as r:
            assert r.status == 200
            assert (await r.json())["lag_seconds"] == 0.8
        async with s.post(control / "admin/failover", headers=auth) as r:
            assert r.status == 200
        async with s.get(public_url(server) / "x") as r:
            assert (await r.json())["backend"] == "cpu"
        async with s.get(control / "admin/status", headers=auth) as r:
            status = await r.json()
        async with s.get(control / "dashboard/state") as r:
            board = await r.json()
    samples = await scrape(server)
    assert value(samples, "dumont_sync_lag_seconds") == 0.8
    assert value(samples, "dumont_sync_state", state="syncing") == 1.0
    assert value(samples, "dumont_sync_state", state="unknown") == 0.0
    assert (
        value(
            samples,
            "dumont_switches_total",
            **{"from": "primary", "to": "standby", "reason": "admin"},
        )
        == 1.0
    )
    for state in (status, board):
        assert state["active"] == "standby"
        assert state["sync"]["state"] == "syncing"
        assert state["switches"][0]["kind"] == "failover"
        assert state["savings"]["interruptions_survived"] == 0  # an admin switch is a drill
        assert isinstance(state["backends"]["primary"]["latency_history_ms"], list)
    table = render_status(status)
    assert "serving: cpu (standby)" in table
    assert "sync: syncing" in table


async def test_metrics_off(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu), metrics=False)
    async with aiohttp.ClientSession() as s, s.get(control_url(server) / "metrics") as r:
        assert r.status == 404
    assert type(server.traffic).__name__ == "NullTrafficObserver"


async def test_status_cli(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN)
    assert server.control is not None
    address = str(server.control.address)

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "status", "--control", address, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
            env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, _, err = await cli()
    assert code == 2
    assert "401" in err
    code, out, _ = await cli("--admin-token", TOKEN)
    assert code == 0, out
    assert "serving: gpu (primary)" in out
    assert "gpu      primary  up" in out


def test_savings_arithmetic_matches_the_seed() -> None:
    prices = PricesConfig(standby_per_hour=0.005, gpu_per_hour=0.40, downtime_per_minute=1.0)
    ledger = SavingsLedger(started_at=0.0, interruptions=2, switch_seconds=3.0)
    result = savings(prices, ledger, now=3600 * 10)
    assert result["standby_cost_per_month"] == 3.6  # the seed's $3.60/month per GPU
    assert result["standby_cost_so_far"] == 0.05
    assert result["downtime_avoided_minutes"] == 29.95  # 2 x 15 min - 3 s measured
    assert result["value_saved"] == 29.95
    assert result["net"] == 29.9
    assert result["standby_share_of_gpu"] == 0.0125
    assert result["break_even_minutes_per_month"] == 3.6
    unpriced = savings(dataclasses.replace(prices, downtime_per_minute=None), ledger, now=3600)
    assert unpriced["configured"] is False
    assert unpriced["value_saved"] is None
    assert unpriced["net"] is None


@pytest.mark.parametrize(
    ("key", "raw"), [("prices.standby_per_hour", "-1"), ("prices.gpu_per_hour", "lots")]
)
def test_price_settings_are_validated(key: str, raw: str) -> None:
    from proxy.config import SETTINGS, load_config
    from proxy.errors import ConfigError

    setting = next(s for s in SETTINGS if s.key == key)
    assert setting.env is not None
    env = {"DUMONT_PRIMARY": "http://a:1", "DUMONT_STANDBY": "http://b:1", setting.env: raw}
    with pytest.raises(ConfigError, match=key):
        load_config(env=env)
    ok = load_config(env={**env, setting.env: "0.25"})
    assert getattr(ok.prices, key.split(".")[1]) == 0.25


def exposed_names(text: str) -> set[str]:
    """Every series name a query may use, including families that have no sample yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


async def test_alerts_and_grafana_use_only_exported_names(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))
    server.board.tips = StaticTips()
    async with aiohttp.ClientSession() as s:
        async with s.put(
            control_url(server) / "admin/sync", json={"state": "syncing", "lag_seconds": 1.5}
        ) as r:
            assert r.status == 200
        async with s.get(control_url(server) / "metrics") as r:
            names = exposed_names(await r.text())
    used = set()
    for path in (
        REPO / "deploy" / "prometheus" / "alerts.yml",
        REPO / "deploy" / "grafana" / "dumont-proxy.json",
    ):
        used |= set(re.findall(r"\bdumont_[a-z_]+", path.read_text()))
    used -= {"dumont_proxy"}  # the Grafana dashboard's uid, not a metric
    # A replica's series (tests/cluster/test_replicas.py checks those against a replica).
    used = {name for name in used if not name.startswith("dumont_cluster_")}
    assert used
    assert used <= names, used - names


class StaticTips:
    def snapshot(self) -> dict[str, TipCounts]:
        return {"a": TipCounts(impressions=10, clicks=1)}


async def test_tip_clicks_on_the_public_listener_reach_metrics_and_status(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))
    click = public_url(server) / "__dumont/tips/ollama-llm/click"
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(click, allow_redirects=False) as r:
                assert r.status == 302
        async with s.get(control_url(server) / "dashboard/state") as r:
            tips = (await r.json())["tips"]
    samples = await scrape(server)
    assert value(samples, "dumont_tip_clicks_total", variant="ollama-llm") == 2.0
    assert value(samples, "dumont_tip_impressions_total", variant="ollama-llm") == 0.0
    assert tips == {"ollama-llm": {"impressions": 0, "clicks": 2, "click_rate": None}}


async def test_switch_reasons_map_to_the_fixed_set() -> None:
    """The machine's free-text reasons become health_check, passive, admin or recovery."""
    from yarl import URL

    from proxy.config import Config
    from proxy.failover import (
        AdminFailover,
        CheckResult,
        Event,
        FailoverMachine,
        PassiveFailure,
        Policy,
        Tick,
    )
    from proxy.metrics import ProxyMetrics
    from proxy.sync_report import SyncReport
    from proxy.workspace import Workspace

    workspace = Workspace(
        Config(primary=URL("http://127.0.0.1:1"), standby=URL("http://127.0.0.1:2"))
    )
    metrics = ProxyMetrics(workspace, SyncReport(), now=lambda: 100.0)
    machine = FailoverMachine(Policy(fall=2, rise=2, failback_hold=100.0))

    def feed(event: Event) -> None:  # what Workspace.feed does for its observers
        decisions = machine.handle(event)
        metrics.observe(event)
        for decision in decisions:
            metrics.observe(decision)

    try:
        for role in ("primary", "standby"):
            feed(CheckResult(role, True, 0.0, 0.001))
        feed(AdminFailover(1.0))
        assert machine.active == "standby"
        # The standby fails its checks: straight home.
        feed(CheckResult("standby", False, 2.0, None, "HTTP 502"))
        feed(CheckResult("standby", False, 2.1, None, "HTTP 502"))
        assert machine.active == "primary"
        feed(CheckResult("standby", True, 3.0, 0.001))
        feed(CheckResult("standby", True, 3.1, 0.001))
        # One failed check, then a failing request: the request's failure takes the primary down.
        feed(CheckResult("primary", False, 4.0, None, "timed out"))
        feed(PassiveFailure("primary", 4.1, "connect failed"))
        assert machine.active == "standby"
        # The primary recovers; automatic failback after the hold-down.
        feed(CheckResult("primary", True, 5.0, 0.001))
        feed(CheckResult("primary", True, 6.0, 0.001))
        feed(Tick(106.0))
        assert machine.active == "primary"
        samples = {}
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                if s.name == "dumont_switches_total" and s.value:
                    samples[s.labels["from"], s.labels["to"], s.labels["reason"]] = s.value
        assert samples == {
            ("primary", "standby", "passive"): 1.0,
            ("standby", "primary", "recovery"): 1.0,
            ("primary", "standby", "admin"): 1.0,
            ("standby", "primary", "health_check"): 1.0,
        }
    finally:
        await workspace.close()
