"""Many workspaces in one in-process proxy: routing by Host, the control API, the state directory,
and the metrics' workspace label. (The CLI proxy with real processes: tests/e2e/test_workspaces.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Config, HealthConfig, HostPort, workspace_setting
from proxy.server import ProxyServer
from proxy.workspaces.spec import parse_workspace
from tests.support.proxies import control_url, public_url, url_of
from tests.support.upstream_app import make_upstream_app
from tests.support.waiting import until

Backends = dict[str, TestServer]
Starter = Callable[..., Awaitable[ProxyServer]]
FAST = HealthConfig(interval=0.2, timeout=0.2, fall=2, rise=2, warmup_path=None)


@pytest.fixture
async def backends(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Backends:
    names = ("alice-gpu", "alice-cpu", "bob-gpu", "bob-cpu", "carol-gpu", "carol-cpu")
    return {name: await aiohttp_server(make_upstream_app(name)) for name in names}


def document(backends: Backends, name: str, *hosts: str) -> dict[str, Any]:
    return {
        "hosts": list(hosts),
        "primary": str(url_of(backends[f"{name}-gpu"])),
        "standby": str(url_of(backends[f"{name}-cpu"])),
    }


@pytest.fixture
async def start(backends: Backends, tmp_path: Path) -> AsyncIterator[Starter]:
    running: list[ProxyServer] = []

    async def starter(state_dir: Path | None = tmp_path / "state", **changes: Any) -> ProxyServer:
        specs = (
            parse_workspace("alice", document(backends, "alice", "alice.test"), workspace_setting),
            parse_workspace("bob", document(backends, "bob", "*.bob.test"), workspace_setting),
        )
        config = Config(
            listen=HostPort("127.0.0.1", 0),
            control_listen=HostPort("127.0.0.1", 0),
            health=FAST,
            shutdown_timeout=2.0,
            workspaces=specs,
            state_dir=state_dir,
        )
        server = ProxyServer(dataclasses.replace(config, **changes))
        await server.start()
        running.append(server)
        await until(lambda: all(s.workspace.machine.active for s in server.sites), "all serving")
        return server

    yield starter
    for server in running:
        await server.stop()


async def fetch(
    server: ProxyServer, host: str | None, path: str = "/", **headers: str
) -> tuple[int, str, str]:
    """(status, content type, body) of a GET through the public listener with this Host."""
    if host is not None:
        headers["Host"] = host
    async with (
        aiohttp.ClientSession(skip_auto_headers=() if host else ("Host",)) as session,
        session.get(public_url(server) / path.lstrip("/"), headers=headers) as response,
    ):
        return response.status, response.content_type, await response.text()


async def admin(
    server: ProxyServer, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, control_url(server) / path.lstrip("/"), json=body) as response,
    ):
        return response.status, await response.json()


async def backend_of(server: ProxyServer, host: str) -> str:
    status, _, body = await fetch(server, host, "/who")
    assert status == 200, body
    return str(json.loads(body)["backend"])


async def test_each_host_reaches_its_own_workspace(start: Starter) -> None:
    server = await start()
    assert await backend_of(server, "alice.test") == "alice-gpu"
    assert await backend_of(server, "ALICE.test:8443") == "alice-gpu"
    assert await backend_of(server, "x.bob.test") == "bob-gpu"


@pytest.mark.parametrize("host", ["carol.test", "127.0.0.1", "bob.test", "alice.test.evil", None])
async def test_a_host_no_workspace_answers_gets_a_404_never_an_ide(
    start: Starter, host: str | None
) -> None:
    server = await start()
    status, kind, body = await fetch(
        server, host, "/", Accept="text/html", **{"Sec-Fetch-Mode": "navigate"}
    )
    assert (status, kind) == (404, "text/html")
    assert "No IDE is served" in body
    assert "alice-gpu" not in body
    status, kind, body = await fetch(server, host, "/api/x", Accept="application/json")
    assert (status, kind) == (404, "application/json")
    assert "no workspace answers" in body


async def test_default_workspace_takes_unknown_hosts(start: Starter) -> None:
    server = await start(default_workspace="bob")
    assert await backend_of(server, "127.0.0.1") == "bob-gpu"
    assert await backend_of(server, "alice.test") == "alice-gpu"


async def test_a_command_switches_only_its_workspace(start: Starter) -> None:
    server = await start()
    status, body = await admin(server, "POST", "/admin/workspaces/alice/failover")
    assert status == 200, body
    assert body["active"] == "standby"
    assert await backend_of(server, "alice.test") == "alice-cpu"
    assert await backend_of(server, "a.bob.test") == "bob-gpu"
    status, body = await admin(server, "POST", "/admin/failover")
    assert status == 404
    assert "no workspace 'default'" in body["detail"]


async def test_put_creates_replaces_and_delete_removes(start: Starter, backends: Backends) -> None:
    server = await start()
    carol = document(backends, "carol", "carol.test")
    status, body = await admin(server, "PUT", "/admin/workspaces/carol", carol)
    assert status == 200, body
    assert body["created"] is True
    await until(lambda: server.sites.get("carol").workspace.machine.active == "primary", "carol up")
    assert await backend_of(server, "carol.test") == "carol-gpu"
    # The same backends with other hosts: the same workspace, its state kept.
    before = server.sites.get("carol")
    status, body = await admin(
        server, "PUT", "/admin/workspaces/carol", {**carol, "hosts": ["c.test"]}
    )
    assert status == 200
    assert body["created"] is False
    assert server.sites.get("carol") is before
    assert (await fetch(server, "carol.test"))[0] == 404
    assert await backend_of(server, "C.test") == "carol-gpu"
    # Swapped backends: a new machine for it.
    swapped = {
        **carol,
        "primary": carol["standby"],
        "standby": carol["primary"],
        "hosts": ["c.test"],
    }
    status, body = await admin(server, "PUT", "/admin/workspaces/carol", swapped)
    assert status == 200
    assert server.sites.get("carol") is not before
    await until(lambda: server.sites.get("carol").workspace.machine.active == "primary", "carol up")
    assert await backend_of(server, "c.test") == "carol-cpu"
    status, listed = await admin(server, "GET", "/admin/workspaces")
    assert [w["name"] for w in listed["workspaces"]] == ["alice", "bob", "carol"]
    status, body = await admin(server, "DELETE", "/admin/workspaces/carol")
    assert (status, body) == (200, {"deleted": "carol"})
    assert (await fetch(server, "c.test"))[0] == 404
    assert (await admin(server, "DELETE", "/admin/workspaces/carol"))[0] == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"primary": "not a url"}, "workspaces.carol.primary"),
        ({"hosts": ["alice.test"]}, "workspaces.carol.hosts: 'alice.test' is already claimed"),
        ({"hosts": []}, "workspaces.carol.hosts"),
        ({"colour": "red"}, "workspaces.carol.colour: unknown key"),
        ({"overrides": {"health": {"fall": 0}}}, "workspaces.carol.health.fall"),
    ],
)
async def test_a_bad_put_is_a_400_naming_the_field_and_changes_nothing(
    start: Starter, backends: Backends, change: dict[str, Any], field: str
) -> None:
    server = await start()
    before = await admin(server, "GET", "/admin/workspaces")
    status, body = await admin(
        server,
        "PUT",
        "/admin/workspaces/carol",
        {**document(backends, "carol", "carol.test"), **change},
    )
    assert status == 400
    assert field in body["detail"]
    assert "\n" not in body["detail"]
    assert await admin(server, "GET", "/admin/workspaces") == before
    assert (await admin(server, "PUT", "/admin/workspaces/Bad_Name", {}))[0] == 400


async def test_api_changes_survive_a_restart_and_a_deletion_beats_the_toml(
    start: Starter, backends: Backends, tmp_path: Path
) -> None:
    server = await start()
    assert (
        await admin(
            server, "PUT", "/admin/workspaces/carol", document(backends, "carol", "carol.test")
        )
    )[0] == 200
    assert (await admin(server, "DELETE", "/admin/workspaces/bob"))[0] == 200
    await server.stop()
    again = await start()
    assert sorted(site.name for site in again.sites) == ["alice", "carol"]
    assert await backend_of(again, "carol.test") == "carol-gpu"
    assert (await fetch(again, "x.bob.test"))[0] == 404


async def test_metrics_carry_the_workspace_and_lose_a_deleted_ones(start: Starter) -> None:
    server = await start()

    async def workspaces_in_metrics() -> set[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(control_url(server) / "metrics") as r,
        ):
            text = await r.text()
        found = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                assert "workspace" in sample.labels, sample
                found.add(sample.labels["workspace"])
        return found

    assert await workspaces_in_metrics() == {"alice", "bob"}
    assert (await admin(server, "DELETE", "/admin/workspaces/bob"))[0] == 200
    assert await workspaces_in_metrics() == {"alice"}


async def test_each_workspaces_status_and_events_follow_the_host(start: Starter) -> None:
    server = await start()
    await admin(server, "POST", "/admin/workspaces/alice/failover")
    _, _, alice = await fetch(server, "alice.test", "/__dumont/status")
    _, _, bob = await fetch(server, "y.bob.test", "/__dumont/status")
    assert '"active": "standby"' in alice
    assert '"active": "primary"' in bob
    assert (await fetch(server, "nobody.test", "/__dumont/status"))[0] == 404
    status, _, health = await fetch(server, "nobody.test", "/__dumont/healthz")
    assert status == 200
    assert '"workspaces": 2' in health


async def test_delete_drains_requests_in_flight_and_closes_websockets_with_1001(
    start: Starter,
) -> None:
    server = await start()
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(public_url(server) / "ws", headers={"Host": "alice.test"})
        slow = asyncio.ensure_future(fetch(server, "alice.test", "/slow?s=1"))  # noqa: TID251 - awaited below
        await until(
            lambda: server.sites.get("alice").workspace.backends["primary"].pool.busy_count > 0,
            "in flight",
        )
        status, body = await admin(server, "DELETE", "/admin/workspaces/alice")
        assert status == 200, body
        closed = await socket.receive()
        assert closed.type == aiohttp.WSMsgType.CLOSE
        assert closed.data == 1001
        status, _, answer = await slow
        assert status == 200, answer
    assert (await fetch(server, "alice.test", "/who"))[0] == 404
    assert await backend_of(server, "q.bob.test") == "bob-gpu"


async def test_a_backend_replaced_through_the_api_is_listed_and_kept_across_a_restart(
    start: Starter, backends: Backends
) -> None:
    server = await start()
    new = str(url_of(backends["carol-gpu"]))
    status, body = await admin(
        server, "PUT", "/admin/workspaces/alice/backends/primary", {"url": new}
    )
    assert status == 200, body
    assert await backend_of(server, "alice.test") == "carol-gpu"
    _, listed = await admin(server, "GET", "/admin/workspaces/alice")
    assert listed["primary"] == new + "/"
    status, _ = await admin(server, "PUT", "/admin/workspaces/alice/backends/standby", {"url": new})
    assert status == 409
    await server.stop()
    again = await start()
    assert await backend_of(again, "alice.test") == "carol-gpu"


async def test_a_workspace_with_its_own_tips_shows_and_counts_them(
    start: Starter, backends: Backends
) -> None:
    server = await start()
    tip = {
        "id": "lab-gpu",
        "title": "Book the lab GPU",
        "text": "Fridays.",
        "link": "https://lab.test/",
    }
    carol = {**document(backends, "carol", "carol.test"), "pages": {"tips": [tip]}}
    status, body = await admin(server, "PUT", "/admin/workspaces/carol", carol)
    assert status == 200, body
    _, _, page = await fetch(server, "carol.test", "/__dumont/transition")
    assert "Book the lab GPU" in page
    _, _, page = await fetch(server, "alice.test", "/__dumont/transition")
    assert "Book the lab GPU" not in page
    assert "Deploy an LLM in 2 min" in page
    _, _, carol_status = await fetch(server, "carol.test", "/__dumont/status")
    assert json.loads(carol_status)["tips"] == {"lab-gpu": {"impressions": 1, "clicks": 0}}
    bad = {**carol, "pages": {"watcher": False}}
    status, body = await admin(server, "PUT", "/admin/workspaces/carol", bad)
    assert status == 400
    assert "workspaces.carol.pages.watcher: unknown key" in body["detail"]
