"""Issue 15's observability for people: the dashboard's overview of every workspace, the page per
workspace whose buttons command that workspace alone, and ``dumont-proxy status``'s listing.

The proxy runs in-process from a TOML file with ``[workspaces.NAME]`` tables; each workspace has
its own two test backends, so a row or a page showing another workspace's state shows another
workspace's backend URLs too.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect
from yarl import URL

from proxy.config import load_config
from proxy.server import ProxyServer
from tests.support.browser import CHROMIUM, chromium
from tests.support.proxies import (
    ProxyFactory,
    Upstreams,
    control_url,
    public_url,
    start_healthz_only,
    url_of,
)
from tests.support.upstream_app import make_upstream_app
from tests.support.waiting import until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "overview-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOP = f"""
listen = "127.0.0.1:0"
control_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
shutdown_timeout = 2.0
"""
FAST_CHECKS = """
[health]
interval = 0.2
timeout = 0.2
fall = 2
rise = 2
warmup_path = ""
"""
# A thousand workspaces' checks at the fast pace would be 10,000 probes a second in the test.
SLOW_CHECKS = """
[health]
interval = 5.0
warmup_path = ""
"""

StartProxy = Callable[..., Awaitable[ProxyServer]]
Backends = dict[str, tuple[TestServer, TestServer]]


def workspace_table(
    name: str, hosts: list[str], primary: URL, standby: URL, extra: str = ""
) -> str:
    return (
        f"\n[workspaces.{name}]\nhosts = {json.dumps(hosts)}\n"
        f'primary = "{primary}"\nstandby = "{standby}"\n{extra}'
    )


@pytest.fixture
async def start_proxy(tmp_path: Path) -> AsyncIterator[StartProxy]:
    """Start proxies from TOML (TOP, the checks, then the given tables); all are stopped after
    the test."""
    started: list[ProxyServer] = []

    async def start(tables: str, checks: str = FAST_CHECKS) -> ProxyServer:
        path = tmp_path / f"dumont-{len(started)}.toml"
        path.write_text(TOP + checks + tables)
        server = ProxyServer(load_config(file=path))
        await server.start()
        started.append(server)
        # The first checks decide who serves: wait for every workspace's instead of racing them.
        await until(
            lambda: all(
                h.last_check_at is not None
                for site in server.sites
                for h in site.workspace.machine.health.values()
            ),
            "every workspace's first health checks",
        )
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def backends(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Backends:
    """alice's and bob's backends, each answering with its own name."""
    found: Backends = {}
    for name in ("alice", "bob"):
        gpu = await aiohttp_server(make_upstream_app(f"{name}-gpu"))
        cpu = await aiohttp_server(make_upstream_app(f"{name}-cpu"))
        found[name] = (gpu, cpu)
    return found


def two_workspaces(backends: Backends) -> str:
    """alice with no prices; bob with prices, so only bob's savings can show money."""
    alice_gpu, alice_cpu = backends["alice"]
    bob_gpu, bob_cpu = backends["bob"]
    bob_prices = "[workspaces.bob.prices]\nstandby_per_hour = 0.005\ndowntime_per_minute = 0.5\n"
    return workspace_table(
        "alice", ["alice.ide.test"], url_of(alice_gpu), url_of(alice_cpu)
    ) + workspace_table(
        "bob", ["bob.ide.test", "*.bob.ide.test"], url_of(bob_gpu), url_of(bob_cpu), bob_prices
    )


async def get_json(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def shown_url(backend: TestServer) -> str:
    """A backend's URL as the proxy shows it (the path "/" spelled out)."""
    return str(url_of(backend).with_path("/"))


def rows_by_name(overview: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in overview["workspaces"]}


def cell(html: str, workspace: str, field: str) -> str:
    """The text of one cell of the overview's server-drawn table."""
    row = re.search(rf'<tr data-workspace="{workspace}">(.*?)</tr>', html, re.S)
    assert row is not None, f"no row for {workspace}"
    found = re.search(rf'<td data-field="{field}"[^>]*>(.*?)</td>', row.group(1), re.S)
    assert found is not None, f"no {field} cell for {workspace}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


async def bob_loses_his_gpu(
    session: aiohttp.ClientSession, server: ProxyServer, backends: Backends
) -> None:
    """A real interruption of bob's alone: his GPU backend dies, his standby takes over."""
    await backends["bob"][0].close()
    bob = server.sites.get("bob").workspace

    async def bob_on_standby() -> bool:
        async with session.get(public_url(server) / "x", headers={"Host": "bob.ide.test"}) as r:
            return bob.machine.active == "standby" and (await r.json())["backend"] == "bob-cpu"

    await until(bob_on_standby, "bob serving from his standby")


async def test_overview_json_and_html_show_each_workspace_its_own_state(
    start_proxy: StartProxy, backends: Backends
) -> None:
    server = await start_proxy(two_workspaces(backends))
    control = control_url(server)
    async with aiohttp.ClientSession() as session:
        async with session.put(
            control / "admin/workspaces/alice/sync",
            json={"state": "syncing", "lag_seconds": 0.42},
            headers=AUTH,
        ) as r:
            assert r.status == 200
        await bob_loses_his_gpu(session, server, backends)
        overview = await get_json(session, control / "dashboard/overview")
        # The CLI's copy of it wants the token, as every /admin route does.
        async with session.get(control / "admin/overview") as r:
            assert r.status == 401
        for_the_cli = await get_json(session, control / "admin/overview", headers=AUTH)
        async with session.get(control / "dashboard") as r:
            assert r.status == 200
            assert "script-src" not in r.headers["Content-Security-Policy"]  # 'self' only
            html = await r.text()

    assert overview["named_workspaces"] is True
    assert for_the_cli["totals"] == overview["totals"]
    assert overview["totals"]["workspaces"] == 2
    assert overview["totals"]["states"] == {
        "serving_primary": 1, "serving_standby": 1, "switching": 0, "unavailable": 0,
    }  # fmt: skip
    assert overview["totals"]["interruptions_survived"] == 1
    rows = rows_by_name(overview)
    assert list(rows) == ["alice", "bob"]
    alice, bob = rows["alice"], rows["bob"]
    assert alice["hosts"] == ["alice.ide.test"]
    assert bob["hosts"] == ["bob.ide.test", "*.bob.ide.test"]
    assert (alice["state"], alice["active"]) == ("serving_primary", "primary")
    assert (bob["state"], bob["active"]) == ("serving_standby", "standby")
    assert alice["healthy"] == {"primary": True, "standby": True}
    assert bob["healthy"] == {"primary": False, "standby": True}
    # Each row's backends are its own (a backend's name is its role's: gpu or cpu).
    assert alice["backends"]["primary"] == {"name": "gpu", "url": shown_url(backends["alice"][0])}
    assert bob["backends"]["standby"] == {"name": "cpu", "url": shown_url(backends["bob"][1])}
    assert alice["last_switch"] is None
    assert bob["last_switch"]["kind"] == "failover"
    assert bob["last_switch"]["to"] == "standby"
    assert bob["last_switch"]["outcome"] == "completed"
    assert 0 <= bob["last_switch"]["age_s"] < 60
    assert alice["sync"]["state"] == "syncing"
    assert alice["sync"]["lag_seconds"] == 0.42
    assert bob["sync"]["state"] == "unknown"
    # Per-workspace savings: bob survived one interruption and has prices, alice neither.
    assert bob["savings"]["interruptions_survived"] == 1
    assert bob["savings"]["configured"] is True
    assert bob["savings"]["value_saved"] > 0
    assert alice["savings"]["interruptions_survived"] == 0
    assert alice["savings"]["value_saved"] is None
    assert alice["attention"] == []
    assert bob["attention"] == ["on the standby", "primary down"]
    assert alice["url"] == "/dashboard/workspaces/alice"
    assert "latency_history_ms" not in json.dumps(overview)  # cheap at a thousand workspaces

    # The page arrives drawn: each row with its own workspace's state.
    assert 'src="/dashboard/static/dashboard_overview.js' in html
    assert "<script>" not in html  # no inline script: the CSP would refuse it
    assert cell(html, "alice", "state") == "serving primary"
    assert cell(html, "bob", "state") == "serving standby"
    assert cell(html, "alice", "serving") == "gpu (primary)"
    assert cell(html, "bob", "serving") == "cpu (standby)"
    assert cell(html, "alice", "sync") == "syncing"
    assert cell(html, "bob", "health") == "primary down standby up"
    assert cell(html, "bob", "name") == "bob on the standby primary down"
    assert cell(html, "bob", "savings") == "1 survived"
    assert 'href="/dashboard/workspaces/bob"' in html


async def test_overview_filters_and_pages(start_proxy: StartProxy, backends: Backends) -> None:
    server = await start_proxy(two_workspaces(backends))
    control = control_url(server)
    async with aiohttp.ClientSession() as session:
        await bob_loses_his_gpu(session, server, backends)
        by_host = await get_json(session, control / "dashboard/overview", params={"q": "BOB.ide"})
        troubled = await get_json(
            session, control / "dashboard/overview", params={"attention": "1"}
        )
        second = await get_json(
            session, control / "dashboard/overview", params={"offset": "1", "limit": "1"}
        )
        ignored = await get_json(
            session, control / "dashboard/overview", params={"limit": "many", "offset": "-3"}
        )
    assert [row["name"] for row in by_host["workspaces"]] == ["bob"]
    assert [row["name"] for row in troubled["workspaces"]] == ["bob"]
    assert troubled["matching"] == 1
    assert troubled["totals"]["workspaces"] == 2  # totals count every workspace, always
    assert [row["name"] for row in second["workspaces"]] == ["bob"]
    assert (second["offset"], second["limit"], second["matching"]) == (1, 1, 2)
    assert [row["name"] for row in ignored["workspaces"]] == ["alice", "bob"]


async def test_a_primary_standby_proxy_keeps_its_one_page(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as session:
        async with session.get(control_url(server) / "dashboard") as r:
            html = await r.text()
        overview = await get_json(session, control_url(server) / "dashboard/overview")
    assert 'id="serving"' in html
    assert 'data-state-url="/dashboard/state"' in html
    assert 'data-admin-base="/admin"' in html
    assert "workspaces-body" not in html
    assert "All workspaces" not in html  # no overview to go back to
    assert overview["named_workspaces"] is False
    assert [row["name"] for row in overview["workspaces"]] == ["default"]


async def test_each_workspace_page_reads_and_commands_its_own_workspace(
    start_proxy: StartProxy, backends: Backends
) -> None:
    server = await start_proxy(two_workspaces(backends))
    control = control_url(server)
    async with aiohttp.ClientSession() as session:
        async with session.get(control / "dashboard/workspaces/bob") as r:
            assert r.status == 200
            assert "script-src" not in r.headers["Content-Security-Policy"]
            html = await r.text()
        state = await get_json(session, control / "dashboard/workspaces/bob/state")
        async with session.get(control / "dashboard/workspaces/carol") as r:
            assert r.status == 404
        # The short forms are the "default" workspace's, and this proxy has none.
        async with session.get(control / "dashboard/state") as r:
            assert r.status == 404
    assert 'data-state-url="/dashboard/workspaces/bob/state"' in html
    assert 'data-admin-base="/admin/workspaces/bob"' in html
    assert '<a class="back" href="/dashboard">All workspaces</a>' in html
    assert shown_url(backends["bob"][0]) in html
    assert shown_url(backends["alice"][0]) not in html
    assert state["backends"]["primary"]["url"] == shown_url(backends["bob"][0])


async def status_cli(control: URL, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "status", "--control", f"{control.host}:{control.port}",
        "--admin-token", TOKEN, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def listed(out: str) -> dict[str, list[str]]:
    """The listing's rows by workspace: its cells, split on the table's two-space gaps."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("workspace "))
    return {
        line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in lines[header + 2 :] if line
    }


async def test_status_cli_lists_the_workspaces(start_proxy: StartProxy, backends: Backends) -> None:
    server = await start_proxy(two_workspaces(backends))
    control = control_url(server)
    async with aiohttp.ClientSession() as session:
        await bob_loses_his_gpu(session, server, backends)

    code, out, err = await status_cli(control)
    assert code == 0, err  # each workspace has something serving
    assert out.startswith("workspaces: 2    on primary: 1    on standby: 1"), out
    rows = listed(out)
    assert rows["alice"][:6] == [
        "alice", "alice.ide.test", "serving_primary", "primary", "up", "up",
    ]  # fmt: skip
    assert rows["bob"][:6] == [
        "bob", "bob.ide.test,*.bob.ide.test", "serving_standby", "standby", "DOWN", "up",
    ]  # fmt: skip
    assert rows["alice"][6] == "-"
    assert rows["bob"][6].startswith("failover -> standby completed")
    assert rows["alice"][7] == "unknown"
    assert rows["bob"][8] == "on the standby, primary down"

    code, out, _ = await status_cli(control, "--workspace", "bob")
    assert code == 0
    assert "serving: cpu (standby)" in out
    assert "gpu      primary  DOWN" in out
    assert shown_url(backends["bob"][1]) in out

    code, out, _ = await status_cli(control, "--json")
    assert [row["name"] for row in json.loads(out)["workspaces"]] == ["alice", "bob"]

    code, _, err = await status_cli(control, "--workspace", "carol")
    assert code == 2
    assert "HTTP 404: no workspace 'carol'" in err


async def test_status_cli_with_a_workspace_down(start_proxy: StartProxy) -> None:
    dead_gpu, dead_cpu, live_gpu, live_cpu = await start_healthz_only(4)
    try:
        tables = workspace_table(
            "dead", ["dead.ide.test"], url_of(dead_gpu), url_of(dead_cpu)
        ) + workspace_table("live", ["live.ide.test"], url_of(live_gpu), url_of(live_cpu))
        await dead_gpu.close()
        await dead_cpu.close()
        server = await start_proxy(tables)
        await until(
            lambda: server.sites.get("dead").workspace.machine.state == "unavailable",
            "nothing serving dead",
        )
        code, out, _ = await status_cli(control_url(server))
    finally:
        for backend in (live_gpu, live_cpu):
            await backend.close()
    assert code == 1  # one workspace serves nothing
    assert listed(out)["dead"][3] == "NOTHING"


async def submit_token(page: Page) -> None:
    await expect(page.locator("#token-form")).to_be_visible()
    await page.fill("#token", TOKEN)
    await page.click("#token-form button[type=submit]")


def watch(page: Page) -> tuple[list[str], list[str]]:
    """The page's script errors and CSP refusals (Chromium logs each refusal on the console),
    and the paths it POSTed to."""
    errors: list[str] = []
    posts: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    page.on(
        "request",
        lambda request: posts.append(URL(request.url).path) if request.method == "POST" else None,
    )
    return errors, posts


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_overview_in_chromium(start_proxy: StartProxy, backends: Backends) -> None:
    expect.set_options(timeout=15_000)  # generous: the test machine is often loaded
    server = await start_proxy(two_workspaces(backends))
    async with aiohttp.ClientSession() as session, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        errors, _ = watch(page)
        await page.goto(str(control_url(server) / "dashboard"))
        alice = page.locator('tr[data-workspace="alice"]')
        bob = page.locator('tr[data-workspace="bob"]')
        await expect(page.locator("#workspaces-body tr")).to_have_count(2)
        await expect(bob.locator('[data-field="state"]')).to_have_text("serving primary")

        # Bob's GPU dies while the page is open: his row changes, alice's does not.
        await bob_loses_his_gpu(session, server, backends)
        await expect(bob.locator('[data-field="state"]')).to_have_text("serving standby")
        await expect(bob.locator('[data-field="serving"]')).to_have_text("cpu (standby)")
        await expect(bob.locator('.dot[data-role="primary"]')).to_have_attribute(
            "data-healthy", "false"
        )
        await expect(bob.locator('[data-field="last-switch"]')).to_contain_text(
            "failover → standby · completed"
        )
        await expect(bob.locator('[data-field="savings"]')).to_contain_text("1 survived · $")
        await expect(bob.locator('[data-field="name"]')).to_contain_text("on the standby")
        await expect(page.locator('[data-total="serving_standby"]')).to_have_text("1")
        await expect(page.locator('[data-total="attention"]')).to_have_text("1")
        await expect(alice.locator('[data-field="state"]')).to_have_text("serving primary")
        await expect(alice.locator('[data-field="serving"]')).to_have_text("gpu (primary)")
        await expect(alice.locator('[data-field="savings"]')).to_have_text("0 survived")

        # Filters: by name or host, and the rows needing attention.
        await page.fill("#filter", "alice.ide")
        await expect(page.locator("#workspaces-body tr")).to_have_count(1)
        await expect(alice).to_be_visible()
        await page.fill("#filter", "")
        await page.check("#attention-only")
        await expect(page.locator("#workspaces-body tr")).to_have_count(1)
        await expect(bob).to_be_visible()

        # A row's link opens that workspace's own page.
        await bob.locator("a").click()
        await expect(page).to_have_url(str(control_url(server) / "dashboard/workspaces/bob"))
        await expect(page.locator("#serving")).to_have_text("cpu (standby)")
        await expect(page.locator("#workspace-name")).to_have_text("bob")
        await page.click("a.back")
        await expect(page.locator("#workspaces-body tr")).to_have_count(2)
        assert errors == []


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_workspace_page_buttons_command_that_workspace(
    start_proxy: StartProxy, backends: Backends
) -> None:
    expect.set_options(timeout=15_000)
    server = await start_proxy(two_workspaces(backends))
    control = control_url(server)
    alice = server.sites.get("alice")
    async with aiohttp.ClientSession() as session, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors, posts = watch(page)
        await page.goto(str(control / "dashboard/workspaces/bob"))
        serving = page.locator("#serving")
        await expect(serving).to_have_text("gpu (primary)")
        bob_gpu = shown_url(backends["bob"][0])
        await expect(
            page.locator('.backend[data-role="primary"] [data-field="detail"]')
        ).to_have_text(bob_gpu)
        await expect(page.locator('.backend[data-role="primary"] polyline').first).to_be_attached()

        await page.click("#failover")
        await submit_token(page)
        await expect(serving).to_have_text("cpu (standby)")
        await expect(page.locator("#switches-body")).to_contain_text("admin: failover requested")
        assert alice.workspace.machine.active == "primary"  # bob's button, bob's switch
        assert not alice.workspace.machine.history

        await expect(page.locator("#failback")).to_be_enabled()
        await page.click("#failback")
        await expect(serving).to_have_text("gpu (primary)")

        # Issue 18's idle warning on both: bob's "Keep the GPU" keeps bob's alone.
        for name in ("alice", "bob"):
            async with session.put(
                control / f"admin/workspaces/{name}/park",
                json={"phase": "idle", "idle_s": 1500, "park_in_s": 300},
                headers=AUTH,
            ) as r:
                assert r.status == 200
        await expect(page.locator("#keep")).to_be_visible()
        await page.click("#keep")
        await expect(page.locator("#park-phase")).to_have_text("active")
        await expect(page.locator("#keep")).to_be_hidden()
        assert server.sites.get("bob").board.park.phase == "active"
        assert alice.board.park.phase == "idle"

        # A parked GPU: "Bring the GPU back" asks bob's workspace, which has no resume hook.
        async with session.put(
            control / "admin/workspaces/bob/park", json={"phase": "parked"}, headers=AUTH
        ) as r:
            assert r.status == 200
        await expect(page.locator("#resume")).to_be_visible()
        await page.click("#resume")
        await expect(page.locator("#action-result")).to_have_text(
            "resume refused: no resume hook configured ([hooks] resume)"
        )

        assert posts == [
            "/admin/workspaces/bob/failover",
            "/admin/workspaces/bob/failback",
            "/admin/workspaces/bob/park/keep",
            "/admin/workspaces/bob/resume",
        ]
        assert errors == []


def page_info(first: int, last: int, of: int) -> str:
    return f"{first}\N{EN DASH}{last} of {of}"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_a_thousand_workspaces_page_and_render(start_proxy: StartProxy) -> None:
    """A thousand rows arrive a hundred at a time, and all at once when asked, with the tab still
    answering; one workspace's switch shows in its row alone."""
    expect.set_options(timeout=30_000)  # a thousand workspaces' checks share the loaded machine
    gpu, cpu = await start_healthz_only(2)  # two servers answer for every workspace's backends
    try:
        tables = "".join(
            workspace_table(f"w{i:04d}", [f"w{i:04d}.ide.test"], url_of(gpu), url_of(cpu))
            for i in range(1000)
        )
        server = await start_proxy(tables, SLOW_CHECKS)
        control = control_url(server)
        async with aiohttp.ClientSession() as session, chromium() as browser:
            everything = await get_json(session, control / "dashboard/overview")
            assert everything["totals"]["workspaces"] == 1000
            assert len(everything["workspaces"]) == 1000  # no limit asked: all of them (the CLI)
            page = await browser.new_page(viewport={"width": 1480, "height": 900})
            errors, _ = watch(page)
            await page.goto(str(control / "dashboard"))
            rows = page.locator("#workspaces-body tr")
            await expect(rows).to_have_count(100)
            await expect(page.locator("#page-info")).to_have_text(page_info(1, 100, 1000))
            await page.click("#next")
            await expect(page.locator("#page-info")).to_have_text(page_info(101, 200, 1000))
            await expect(rows.first).to_have_attribute("data-workspace", "w0100")

            await page.select_option("#page-size", "1000")
            await expect(rows).to_have_count(1000)
            await expect(rows.last).to_have_attribute("data-workspace", "w0999")
            # The tab still draws frames: a thousand rows did not freeze it.
            assert await page.evaluate("new Promise(r => requestAnimationFrame(() => r(true)))")

            async with session.post(control / "admin/workspaces/w0500/failover", headers=AUTH) as r:
                assert r.status == 200, await r.text()
            switched = page.locator('tr[data-workspace="w0500"] [data-field="state"]')
            await expect(switched).to_have_text("serving standby")
            await expect(page.locator('[data-total="serving_standby"]')).to_have_text("1")
            neighbour = page.locator('tr[data-workspace="w0501"] [data-field="state"]')
            await expect(neighbour).to_have_text("serving primary")

            await page.fill("#filter", "w0999.ide")
            await expect(rows).to_have_count(1)
            await expect(page.locator("#page-info")).to_have_text(page_info(1, 1, 1))
            assert errors == []
    finally:
        await gpu.close()
        await cpu.close()
