"""Many workspaces behind one proxy (issue 15), end to end: the real ``dumont-proxy`` CLI started
on a TOML file with ``[workspaces.NAME]`` tables, real backend processes (tests/support/
upstream_app.py, which names itself in every answer) killed loud (SIGKILL) or frozen silent
(SIGSTOP) by process group, and the control API driven over HTTP with the bearer token.

What a user of one workspace must never see is another workspace's trouble: the tests run a load
loop over the other workspaces' Hosts and assert it counted no failed request. Time bounds are
generous (switch times are measured in bench/); they catch a switch that waits for the wrong
thing, not a slow machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.support.ports import free_port
from tests.support.processes import REPO, Proc, signal_group, start_proxy, start_upstream
from tests.support.upstream_app import make_upstream_app
from tests.support.waiting import until
from tests.support.workspaces import (
    TOKEN,
    LoadLoop,
    Workspace,
    WorkspaceProxy,
    loads,
    running_proxy,
    wait_serving,
    write_config,
)

pytestmark = [pytest.mark.slow]

# The figures: a 0.5 s interval and fall 2; rise 2, so a new workspace serves within one
# interval plus rise. failback manual: a thawed primary must not take a workspace home mid-test.
INTERVAL, RISE = 0.5, 2
FAST_HEALTH: dict[str, Any] = {
    "health": {"interval": INTERVAL, "fall": 2, "rise": RISE},
    "failback": "manual",
}

AiohttpServer = Callable[..., Awaitable[TestServer]]


class Backends:
    """upstream_app processes by name, each in its own process group."""

    def __init__(self) -> None:
        self.procs: dict[str, Proc] = {}

    def start(self, name: str) -> str:
        self.procs[name] = start_upstream(name)
        return url(self.procs[name])

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    def pair(self, short: str, hosts: list[str], **overrides: Any) -> Workspace:
        """A workspace whose backends answer as "<short>-gpu" and "<short>-cpu"."""
        gpu, cpu = self.start(f"{short}-gpu"), self.start(f"{short}-cpu")
        return Workspace(hosts, gpu, cpu, {**FAST_HEALTH, **overrides})

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()  # SIGCONT first: a frozen group must die too


@pytest.fixture
def backends() -> Iterator[Backends]:
    started = Backends()
    try:
        yield started
    finally:
        started.stop()


def url(server: Proc | TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def document(hosts: list[str], primary: str, standby: str) -> dict[str, Any]:
    """A PUT /admin/workspaces/NAME body with the fast health checks."""
    return {"hosts": hosts, "primary": primary, "standby": standby, "overrides": FAST_HEALTH}


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Bytes as written (an HTTP/1.0 request without Host, say); status and body, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ------------------------------------------------------------------ 1. per-workspace failover


@pytest.mark.parametrize(
    ("sig", "bound"),
    [
        # Loud: connections refused; the first refused request triggers a probe at once.
        (signal.SIGKILL, 0.5),
        # Silent: the kernel accepts, nobody answers; two missed 0.5 s checks (issue 2: 3 s).
        (signal.SIGSTOP, 3.0),
    ],
    ids=["loud", "silent"],
)
async def test_one_workspace_fails_over_alone_and_the_others_see_no_failure(
    tmp_path: Path, backends: Backends, sig: signal.Signals, bound: float
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob", "carol")}
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        victim = LoadLoop(proxy.url, {"alice.test": None})
        others = LoadLoop(proxy.url, {"bob.test": "bob-gpu", "carol.test": "carol-gpu"})
        async with loads(victim, others):
            await until(lambda: victim.count() >= 5 and others.count() >= 10, "traffic flowing")
            assert {b for _, _, b in victim.answers} == {"alice-gpu"}
            fault_at = time.monotonic()
            backends["alice-gpu"].signal_group(sig)
            await until(
                lambda: victim.first_from("alice.test", "alice-cpu", fault_at) is not None,
                "alice's requests reaching her standby",
                timeout=10,
            )
            switched = victim.first_from("alice.test", "alice-cpu", fault_at)
            assert switched is not None
            # The others keep going well past the switch.
            seen = others.count()
            await until(lambda: others.count() >= seen + 200, "the others' traffic after it")
        found = await proxy.workspaces()
    took = switched - fault_at
    print(f"{sig.name}: alice switched in {took * 1000:.0f} ms; others: {others.count()} answers")
    assert took < bound, f"alice took {took:.2f} s to reach her standby"
    assert others.failures == [], "another workspace's request failed during alice's switch"
    # alice's own GETs that met the dead primary were re-sent to the standby, not failed.
    assert victim.failures == []
    assert all(b == "alice-cpu" for t, _, b in victim.answers if t >= switched), "alice flapped"
    assert (found["alice"]["active"], found["alice"]["state"]) == ("standby", "serving_standby")
    for name in ("bob", "carol"):
        assert (found[name]["active"], found[name]["last_switch"]) == ("primary", None), name


# ------------------------------------------------------- 2. the control API under load


class HeldBackend:
    """An in-process backend whose GET /hold answers only when the test releases it: a request
    the test knows is in flight (no sleep guessing when the proxy forwarded it). It also echoes
    WebSockets on /ws and names itself on any other path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hold", self.hold)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/healthz", self.named)
        app.router.add_get("/{tail:.*}", self.named)
        return app

    async def named(self, request: web.Request) -> web.Response:
        return web.json_response({"backend": self.name, "status": "alive"})

    async def hold(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.json_response({"backend": self.name, "held": True})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"{self.name}: {msg.data}")
        return ws


async def test_api_creates_replaces_and_deletes_a_workspace_under_load(
    tmp_path: Path, backends: Backends, aiohttp_server: AiohttpServer
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    first = backends.pair("carol", [])  # carol's first pair, created through the API
    held = HeldBackend("carol2-gpu")
    held_server = await aiohttp_server(held.app(), host="127.0.0.1")
    carol2_cpu = await aiohttp_server(make_upstream_app("carol2-cpu"), host="127.0.0.1")
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        others = LoadLoop(proxy.url, {"alice.test": "alice-gpu", "bob.test": "bob-gpu"})
        carol = LoadLoop(proxy.url, {"carol.test": None}, pause=0.02)
        async with loads(others):
            await until(lambda: others.count() >= 20, "traffic to alice and bob")
            assert proxy.get("/work", host="carol.test")[0] == 404

            # Create: carol serves within one health interval plus rise.
            status, body = await proxy.admin(
                "PUT",
                "/admin/workspaces/carol",
                document(["carol.test"], first.primary, first.standby),
            )
            created_at = time.monotonic()
            assert (status, body["created"]) == (200, True), body
            async with loads(carol):
                await until(lambda: carol.first_from("carol.test", "carol-gpu", created_at))
            serving = carol.first_from("carol.test", "carol-gpu", created_at)
            assert serving is not None
            took = serving - created_at
            print(f"carol created -> served in {took * 1000:.0f} ms")
            assert took < INTERVAL * (1 + RISE) + 0.5, f"carol served {took:.2f} s after PUT"

            # Replace: new backends, the same name and Host. A WebSocket to the old pair is
            # closed with 1012 (service restart), which tells the browser to reconnect.
            carol = LoadLoop(proxy.url, {"carol.test": None}, pause=0.02)
            async with loads(carol), aiohttp.ClientSession() as session:
                old_ws = await session.ws_connect(proxy.url + "/ws", headers={"Host": "carol.test"})
                await old_ws.send_str("whoami")
                assert (await old_ws.receive(timeout=5)).data == "carol-gpu"
                status, body = await proxy.admin(
                    "PUT",
                    "/admin/workspaces/carol",
                    document(["carol.test"], url(held_server), url(carol2_cpu)),
                )
                replaced_at = time.monotonic()
                restarted = await old_ws.receive(timeout=10)
                await old_ws.close()
                assert (restarted.type, restarted.data) == (WSMsgType.CLOSE, 1012), restarted
                assert (status, body["created"]) == (200, False), body
                await until(
                    lambda: carol.first_from("carol.test", "carol2-gpu", replaced_at),
                    "carol on her new pair",
                )
            moved = carol.first_from("carol.test", "carol2-gpu", replaced_at)
            assert moved is not None
            print(f"carol replaced -> new pair served in {(moved - replaced_at) * 1000:.0f} ms")
            assert moved - replaced_at < INTERVAL * (1 + RISE) + 0.5
            # The old pair drains (its requests finish) while the new one takes the Host: carol's
            # own users lose nothing either.
            assert carol.failures == [], "carol's requests failed while her pair was replaced"

            # Delete while a WebSocket is open: it is closed with 1001 (going away).
            headers = {"Host": "carol.test"}
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(proxy.url + "/ws", headers=headers)
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "carol2-gpu: hello"
                status, body = await proxy.admin("DELETE", "/admin/workspaces/carol")
                assert (status, body) == (200, {"deleted": "carol"})
                closed = await ws.receive(timeout=10)
                await ws.close()
            status_after, _, _ = proxy.get("/work", host="carol.test")
            seen = others.count()
            await until(lambda: others.count() >= seen + 50, "the others' traffic after it")
        found = await proxy.workspaces()
    assert (closed.type, closed.data) == (WSMsgType.CLOSE, 1001), closed
    assert status_after == 404
    assert sorted(found) == ["alice", "bob"]
    assert others.failures == [], "alice or bob saw a failure while carol came and went"


async def test_delete_lets_a_request_in_flight_finish(
    tmp_path: Path, backends: Backends, aiohttp_server: AiohttpServer
) -> None:
    held = HeldBackend("carol-gpu")
    gpu = await aiohttp_server(held.app(), host="127.0.0.1")
    cpu = await aiohttp_server(make_upstream_app("carol-cpu"), host="127.0.0.1")
    spaces = {
        "alice": backends.pair("alice", ["alice.test"]),
        "carol": Workspace(["carol.test"], url(gpu), url(cpu), FAST_HEALTH),
    }
    config = write_config(tmp_path / "proxy.toml", spaces)
    try:
        with running_proxy(config, tmp_path / "proxy.log") as proxy:
            await wait_serving(proxy, list(spaces))
            headers = {"Host": "carol.test"}
            async with aiohttp.ClientSession() as session:
                loop = asyncio.get_running_loop()
                in_flight = loop.create_task(_get_json(session, proxy.url + "/hold", headers))
                await asyncio.wait_for(held.arrived.wait(), 10)  # the backend has it
                # DELETE answers once carol has drained: it runs while the request is held.
                deleting = loop.create_task(proxy.admin("DELETE", "/admin/workspaces/carol"))
                # carol's Host leaves the table first; only then is the request released. (The
                # check is async: carol's backend answers in this very event loop.)
                await until(
                    lambda: _answers_with(session, proxy.url + "/work", headers, 404),
                    "carol's Host answered by nobody",
                )
                held.release.set()
                answer = await asyncio.wait_for(in_flight, 15)
                deleted = await asyncio.wait_for(deleting, 15)
    finally:
        held.release.set()  # the in-process handler must not outlive the test
    assert answer == (200, {"backend": "carol-gpu", "held": True}), "the in-flight request died"
    assert deleted == (200, {"deleted": "carol"})


async def _answers_with(
    session: aiohttp.ClientSession, target: str, headers: dict[str, str], status: int
) -> bool:
    async with session.get(target, headers=headers) as response:
        await response.read()
        return response.status == status


async def _get_json(
    session: aiohttp.ClientSession, target: str, headers: dict[str, str]
) -> tuple[int, Any]:
    try:
        async with session.get(target, headers=headers) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError) as exc:
        return 0, repr(exc)


BAD_PUTS = {
    "bad URL": ("dave", {"primary": "ftp://gpu.example:21"}, "workspaces.dave.primary"),
    "claimed host": ("dave", {"hosts": ["alice.test"]}, "workspaces.dave.hosts"),
    "claimed wildcard": ("dave", {"hosts": ["*.bob.test"]}, "workspaces.dave.hosts"),
    "empty hosts": ("dave", {"hosts": []}, "workspaces.dave.hosts"),
    "unknown key": ("dave", {"colour": "teal"}, "workspaces.dave.colour"),
    "unknown override": (
        "dave",
        {"overrides": {"health": {"interval": 0.5, "colour": "teal"}}},
        "workspaces.dave.health.colour",
    ),
    # Replacing an existing workspace with a bad document leaves it as it was.
    "replace with bad URL": ("bob", {"standby": "not a url"}, "workspaces.bob.standby"),
    "replace taking a host": ("bob", {"hosts": ["alice.test"]}, "workspaces.bob.hosts"),
}


@pytest.fixture(scope="module")
def two_workspaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProxy]:
    """alice (alice.test and *.alice.test) and bob (Bob.Test, as a user might write it), with
    no default workspace; the tests that share it change nothing (or must not)."""
    tmp = tmp_path_factory.mktemp("two")
    started = Backends()
    try:
        spaces = {
            "alice": started.pair("alice", ["alice.test", "*.alice.test"]),
            "bob": started.pair("bob", ["Bob.Test", "*.bob.test"]),
        }
        config = write_config(tmp / "proxy.toml", spaces)
        with running_proxy(config, tmp / "proxy.log") as proxy:
            yield proxy
    finally:
        started.stop()


@pytest.mark.parametrize(("name", "change", "field"), BAD_PUTS.values(), ids=BAD_PUTS.keys())
async def test_a_bad_put_is_a_400_naming_the_field_and_changes_nothing(
    two_workspaces: WorkspaceProxy, name: str, change: dict[str, Any], field: str
) -> None:
    proxy = two_workspaces
    await wait_serving(proxy, ["alice", "bob"])
    before = await proxy.workspaces()
    good = document(["dave.test"], "http://127.0.0.1:9", "http://127.0.0.1:10")
    status, body = await proxy.admin("PUT", f"/admin/workspaces/{name}", {**good, **change})
    assert status == 400, body
    assert set(body) == {"error", "detail"}, body
    assert "\n" not in body["detail"]
    assert field in body["detail"], body["detail"]
    after = await proxy.workspaces()
    assert after == before
    assert proxy.backend_of("bob.test") == "bob-gpu"
    assert proxy.get("/work", host="dave.test")[0] == 404


async def test_the_api_refuses_a_caller_without_the_token(two_workspaces: WorkspaceProxy) -> None:
    proxy = two_workspaces
    spec = document(["eve.test"], "http://127.0.0.1:9", "http://127.0.0.1:10")
    for method, path, body in (
        ("GET", "/admin/workspaces", None),
        ("PUT", "/admin/workspaces/eve", spec),
        ("DELETE", "/admin/workspaces/bob", None),
    ):
        status, _ = await proxy.admin(method, path, body, token=TOKEN + "-wrong")
        assert status == 401, (method, path)
    assert sorted(await proxy.workspaces()) == ["alice", "bob"]


# ------------------------------------------------------------------ 3. restart persistence


async def test_api_changes_survive_a_restart_and_a_deleted_seed_stays_deleted(
    tmp_path: Path, backends: Backends
) -> None:
    state = tmp_path / "state"
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    carol = backends.pair("carol", [])
    config = write_config(tmp_path / "proxy.toml", spaces, state_dir=str(state))
    log = tmp_path / "proxy.log"
    with running_proxy(config, log) as proxy:
        await wait_serving(proxy, ["alice", "bob"])
        status, _ = await proxy.admin(
            "PUT", "/admin/workspaces/carol", document(["carol.test"], carol.primary, carol.standby)
        )
        assert status == 200
        status, _ = await proxy.admin("DELETE", "/admin/workspaces/bob")
        assert status == 200
        assert proxy.terminate() == 0
    # The same TOML, which still seeds bob: carol is back, bob stays deleted.
    with running_proxy(config, log) as proxy:
        await wait_serving(proxy, ["alice", "carol"])
        found = await proxy.workspaces()
        assert sorted(found) == ["alice", "carol"]
        assert found["carol"]["hosts"] == ["carol.test"]
        assert found["carol"]["overrides"] == FAST_HEALTH
        assert proxy.backend_of("carol.test") == "carol-gpu"
        assert proxy.backend_of("alice.test") == "alice-gpu"
        assert proxy.get("/work", host="bob.test")[0] == 404


CORRUPTIONS = {
    "all garbage": lambda data: b"this is not a database " * (len(data) // 23 + 1),
    # A valid SQLite header with its pages overwritten: the damage shows only on reading.
    "garbage after the header": lambda data: data[:100] + b"\xa5" * (len(data) - 100),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_corrupt_state_file_stops_start_up_and_is_left_untouched(
    tmp_path: Path, backends: Backends, corrupt: Callable[[bytes], bytes]
) -> None:
    state = tmp_path / "state"
    spaces = {"alice": backends.pair("alice", ["alice.test"])}
    config = write_config(tmp_path / "proxy.toml", spaces, state_dir=str(state))
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, ["alice"])
        assert proxy.terminate() == 0
    store = state / "workspaces.sqlite3"
    garbage = corrupt(store.read_bytes())
    store.write_bytes(garbage)
    before = sorted(p.name for p in state.iterdir())
    argv = [
        sys.executable, "-m", "proxy", "--config", str(config),
        "--listen", f"127.0.0.1:{free_port()}", "--control-listen", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, cwd=REPO, capture_output=True, text=True, timeout=30
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert str(store) in lines[0] or "state_dir" in lines[0], lines[0]
    assert store.read_bytes() == garbage, "the proxy wrote to a corrupt state file"
    assert sorted(p.name for p in state.iterdir()) == before, "the proxy left files beside it"


# -------------------------------------------------------------------------- 4. Host matching

MATCHING = {
    "alice.test": "alice-gpu",
    "ALICE.Test": "alice-gpu",
    "alice.test:8443": "alice-gpu",
    "alice.test.": "alice-gpu",
    "ide.alice.test": "alice-gpu",  # *.alice.test
    "a.b.alice.test:1": "alice-gpu",
    "bob.test": "bob-gpu",  # the TOML says Bob.Test
    "BOB.TEST:80": "bob-gpu",
    "x.Bob.test": "bob-gpu",
}
UNKNOWN = [
    "carol.test",
    "alicetest",
    "xalice.test",  # a suffix matches at a dot only
    "test",
    "127.0.0.1",
    "127.0.0.1:8080",
    "[::1]:8080",
    "10.1.2.3",
    "a b",
    "%%%garbage%%%",
    "alice.test.evil",
]
# No backend's answer may ever appear on the 404 page.
BACKEND_NAMES = (b"alice-gpu", b"alice-cpu", b"bob-gpu", b"bob-cpu")


async def test_hosts_match_exactly_by_wildcard_in_any_case_and_any_port(
    two_workspaces: WorkspaceProxy,
) -> None:
    proxy = two_workspaces
    await wait_serving(proxy, ["alice", "bob"])
    got = {host: proxy.backend_of(host) for host in MATCHING}
    assert got == MATCHING


@pytest.mark.parametrize("host", UNKNOWN)
async def test_an_unknown_host_gets_a_404_never_another_workspace(
    two_workspaces: WorkspaceProxy, host: str
) -> None:
    proxy = two_workspaces
    await wait_serving(proxy, ["alice", "bob"])
    status, headers, body = proxy.get("/work", host=host)
    assert status == 404, body
    assert headers["Content-Type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "detail"}
    bodies = [body]
    for navigation in ({"Accept": "text/html,*/*;q=0.8"}, {"Sec-Fetch-Mode": "navigate"}):
        status, headers, body = proxy.get("/", host=host, headers=navigation)
        assert status == 404, body
        assert headers["Content-Type"].startswith("text/html"), navigation
        assert b"No workspace here" in body
        assert b"/__dumont/static/transition.css" in body  # the transition page's style
        bodies.append(body)
    assert not [name for name in BACKEND_NAMES for body in bodies if name in body]


async def test_no_host_matches_no_workspace(two_workspaces: WorkspaceProxy) -> None:
    proxy = two_workspaces
    await wait_serving(proxy, ["alice", "bob"])
    # HTTP/1.0 may omit Host: no workspace is named, so none answers.
    status, body = raw_request(proxy.port, b"GET /work HTTP/1.0\r\n\r\n")
    assert status == 404, body
    status, body = raw_request(proxy.port, b"GET / HTTP/1.0\r\nAccept: text/html\r\n\r\n")
    assert (status, b"No workspace here" in body) == (404, True), body
    # HTTP/1.1 without Host is malformed (RFC 9112 section 3.2: 400), and still nobody's IDE.
    status, body = raw_request(proxy.port, b"GET /work HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 400, body
    assert not any(name in body for name in BACKEND_NAMES)


async def test_default_workspace_answers_every_host_no_workspace_names(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {
        "alice": backends.pair("alice", ["alice.test", "*.alice.test"]),
        "bob": backends.pair("bob", ["bob.test"]),
    }
    config = write_config(tmp_path / "proxy.toml", spaces, default_workspace="bob")
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, ["alice", "bob"])
        assert proxy.backend_of("ide.alice.test") == "alice-gpu"
        for host in ("carol.test", "127.0.0.1", "[::1]", "%%%garbage%%%", "x.bob.test"):
            assert proxy.backend_of(host) == "bob-gpu", host
        status, body = raw_request(proxy.port, b"GET /work HTTP/1.0\r\n\r\n")
        assert (status, json.loads(body)["backend"]) == (200, "bob-gpu")


# -------------------------------------------------------------------------------- 5. metrics


def label_values(metrics: str, label: str) -> set[str]:
    """Every value ``label`` takes on the dumont_ samples of a Prometheus text page."""
    found = set()
    for line in metrics.splitlines():
        if line.startswith("dumont_") and f'{label}="' in line:
            found.add(line.split(f'{label}="', 1)[1].split('"', 1)[0])
    return found


async def test_metrics_carry_a_workspace_label_bounded_by_the_set(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    carol = backends.pair("carol", [])
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, ["alice", "bob"])
        for host in ("alice.test", "bob.test"):
            proxy.backend_of(host)
        page = await proxy.metrics()
        samples = [line for line in page.splitlines() if line.startswith("dumont_")]
        assert samples
        # The process's own series (connections and requests by protocol, HTTP/2 GOAWAYs) are
        # about the listener, not a workspace; every workspace's series carries its name.
        own = ("dumont_client_", "dumont_http2_")
        unlabelled = [
            line for line in samples if 'workspace="' not in line and not line.startswith(own)
        ]
        assert unlabelled == [], "every series carries its workspace"
        assert label_values(page, "workspace") == {"alice", "bob"}
        assert 'dumont_backend_up{backend="gpu",role="primary",workspace="alice"} 1.0' in page

        status, _ = await proxy.admin(
            "PUT", "/admin/workspaces/carol", document(["carol.test"], carol.primary, carol.standby)
        )
        assert status == 200
        await wait_serving(proxy, ["carol"])
        assert label_values(await proxy.metrics(), "workspace") == {"alice", "bob", "carol"}

        status, _ = await proxy.admin("DELETE", "/admin/workspaces/bob")
        assert status == 200
        page = await proxy.metrics()
        assert label_values(page, "workspace") == {"alice", "carol"}
        assert 'workspace="bob"' not in page


async def test_a_primary_standby_proxy_exposes_no_workspace_label(backends: Backends) -> None:
    gpu, cpu = backends.start("gpu"), backends.start("cpu")
    proxy = start_proxy(gpu, cpu, "--health-interval", "0.5")
    try:
        async with aiohttp.ClientSession() as session:

            async def page() -> str:
                async with session.get(f"http://127.0.0.1:{proxy.control_port}/metrics") as r:
                    return await r.text()

            await until(
                lambda: _contains(page(), 'dumont_backend_up{backend="gpu",role="primary"} 1.0'),
                "the primary up in /metrics",
            )
            text = await page()
    finally:
        proxy.stop()
    assert "workspace" not in text


async def _contains(page: Awaitable[str], needle: str) -> bool:
    return needle in await page


# ---------------------------------------------------------------------------------- 6. hooks


async def test_hooks_know_their_workspace(tmp_path: Path, backends: Backends) -> None:
    out = tmp_path / "hooks"
    out.mkdir()
    # Every workspace's before_failover writes its environment to a file named by the
    # workspace it was given; bob overrides the hook with his own file.
    spaces = {
        "alice": backends.pair("alice", ["alice.test"]),
        "bob": backends.pair(
            "bob", ["bob.test"], hooks={"before_failover": f"env > {out}/bob-own.env"}
        ),
        "carol": backends.pair("carol", ["carol.test"]),
    }
    hooks = {"before_failover": f'env > "{out}/global-$DUMONT_WORKSPACE.env"', "timeout": 10}
    config = write_config(tmp_path / "proxy.toml", spaces, hooks=hooks)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        for name in ("alice", "bob"):
            status, body = await proxy.admin("POST", f"/admin/workspaces/{name}/failover")
            assert status == 200, body
        await wait_serving(proxy, ["alice", "bob"], role="standby")
        assert proxy.backend_of("alice.test") == "alice-cpu"
        assert proxy.backend_of("bob.test") == "bob-cpu"
        assert proxy.backend_of("carol.test") == "carol-gpu"
    assert sorted(p.name for p in out.iterdir()) == ["bob-own.env", "global-alice.env"]
    for file, name in (("global-alice.env", "alice"), ("bob-own.env", "bob")):
        env = dict(
            line.split("=", 1) for line in (out / file).read_text().splitlines() if "=" in line
        )
        assert env["DUMONT_WORKSPACE"] == name, file
        assert env["DUMONT_EVENT"] == "before_failover", file


@contextlib.contextmanager
def hook_reaped(pid_file: Path) -> Iterator[None]:
    """SIGKILL the process group whose id a hook wrote to ``pid_file``, on the way out."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            signal_group(int(pid_file.read_text()), signal.SIGKILL)


async def test_a_hook_that_hangs_holds_up_no_other_workspace(
    tmp_path: Path, backends: Backends
) -> None:
    # alice's before_failover does not end within the test; bob's is instant. A hook runs in a
    # session of its own, which a SIGKILLed proxy leaves behind: it writes its group id so that
    # the test can end it.
    hook_pid = tmp_path / "hook.pid"
    hang = {"before_failover": f"echo $$ > {hook_pid}; sleep 60", "timeout": 120}
    spaces = {
        "alice": backends.pair("alice", ["alice.test"], hooks=hang),
        "bob": backends.pair("bob", ["bob.test"], hooks={"before_failover": "true"}),
        "carol": backends.pair("carol", ["carol.test"]),
    }
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy, hook_reaped(hook_pid):
        await wait_serving(proxy, list(spaces))
        others = LoadLoop(proxy.url, {"bob.test": None, "carol.test": "carol-gpu"})
        async with loads(others):
            status, _ = await proxy.admin("POST", "/admin/workspaces/alice/failover")
            assert status == 200
            asked = time.monotonic()
            status, _ = await proxy.admin("POST", "/admin/workspaces/bob/failover")
            assert status == 200
            await until(
                lambda: others.first_from("bob.test", "bob-cpu", asked) is not None,
                "bob on his standby while alice's hook hangs",
                timeout=10,
            )
            bob_took = (others.first_from("bob.test", "bob-cpu", asked) or asked) - asked
            seen = others.count()
            await until(lambda: others.count() >= seen + 100, "the others' traffic after it")
        found = await proxy.workspaces()
    print(f"bob switched {bob_took * 1000:.0f} ms after his failover, alice's hook still running")
    assert bob_took < 2.0
    assert others.failures == [], "bob or carol saw a failure while alice's hook hung"
    assert found["alice"]["state"] == "switching"  # still waiting for her hook
    assert (found["bob"]["active"], found["carol"]["active"]) == ("standby", "primary")


# ----------------------------------------------- per-workspace commands, pages and events


async def test_commands_under_a_workspaces_path_touch_only_that_workspace(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    replacement = backends.start("alice2-gpu")
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        others = LoadLoop(proxy.url, {"bob.test": "bob-gpu"})
        async with loads(others):
            status, body = await proxy.admin(
                "PUT", "/admin/workspaces/alice/backends/primary", {"url": replacement}
            )
            assert status == 200, body
            await until(lambda: proxy.backend_of("alice.test") == "alice2-gpu", "alice2-gpu")
            status, body = await proxy.admin("GET", "/admin/workspaces/alice/status")
            assert status == 200, body
            status, body = await proxy.admin("POST", "/admin/workspaces/alice/failover")
            assert status == 200, body
            await wait_serving(proxy, ["alice"], role="standby")
            assert proxy.backend_of("alice.test") == "alice-cpu"
            status, body = await proxy.admin("POST", "/admin/workspaces/alice/failback")
            assert status == 200, body
            await wait_serving(proxy, ["alice"])
            assert proxy.backend_of("alice.test") == "alice2-gpu"
            status, body = await proxy.admin("POST", "/admin/workspaces/nobody/failover")
            assert status == 404, body
            # --primary/--standby's short forms are about "default", which this proxy lacks.
            status, body = await proxy.admin("POST", "/admin/failover")
            assert status == 404, body
        found = await proxy.workspaces()
    assert (found["bob"]["active"], found["bob"]["last_switch"]) == ("primary", None)
    assert others.failures == []


async def test_a_backend_replaced_through_the_api_is_what_the_api_lists(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {"alice": backends.pair("alice", ["alice.test"])}
    replacement = backends.start("alice2-gpu")
    config = write_config(tmp_path / "proxy.toml", spaces, state_dir=str(tmp_path / "state"))
    log = tmp_path / "proxy.log"
    with running_proxy(config, log) as proxy:
        await wait_serving(proxy, ["alice"])
        status, body = await proxy.admin(
            "PUT", "/admin/workspaces/alice/backends/primary", {"url": replacement}
        )
        assert status == 200, body
        await until(lambda: proxy.backend_of("alice.test") == "alice2-gpu", "alice2-gpu")
        listed = (await proxy.workspaces())["alice"]
        _, alone = await proxy.admin("GET", "/admin/workspaces/alice")
        assert listed["primary"] == replacement + "/", "GET /admin/workspaces names a stale URL"
        assert alone["primary"] == replacement + "/"
        # A PUT naming the first primary again is a change, and is carried out.
        first = spaces["alice"]
        status, body = await proxy.admin(
            "PUT", "/admin/workspaces/alice", document(["alice.test"], first.primary, first.standby)
        )
        assert status == 200, body
        await until(lambda: proxy.backend_of("alice.test") == "alice-gpu", "alice-gpu again")
        status, body = await proxy.admin(
            "PUT", "/admin/workspaces/alice/backends/primary", {"url": replacement}
        )
        assert status == 200, body
        await until(lambda: proxy.backend_of("alice.test") == "alice2-gpu", "alice2-gpu again")
        assert proxy.terminate() == 0
    # The state directory kept the replacement: a restart does not bring the old primary back.
    with running_proxy(config, log) as proxy:
        await wait_serving(proxy, ["alice"])
        assert proxy.backend_of("alice.test") == "alice2-gpu", "a restart undid the replacement"


async def read_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next server-sent event's JSON (comment and retry lines skipped)."""
    while True:
        line = await asyncio.wait_for(stream.readline(), 10)
        assert line, "the event stream ended"
        if line.startswith(b"data: "):
            event: dict[str, Any] = json.loads(line[6:])
            return event


async def test_each_host_gets_its_own_workspaces_events_status_and_pages(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        async with aiohttp.ClientSession() as session:
            streams = {}
            for name in spaces:
                response = await session.get(
                    proxy.url + "/__dumont/events", headers={"Host": f"{name}.test"}
                )
                streams[name] = response
                first = await read_event(response.content)
                assert (first["active"], first["epoch"]) == ("primary", 1), name
            status, _ = await proxy.admin("POST", "/admin/workspaces/alice/failover")
            assert status == 200
            while (event := await read_event(streams["alice"].content))["active"] != "standby":
                pass
            # bob's stream was fed by the same loop turn as alice's: anything it got is here.
            bob_pending = streams["bob"].content.read_nowait()
            for response in streams.values():
                response.close()
        statuses = {name: proxy.get("/__dumont/status", host=f"{name}.test") for name in spaces}
        unknown = proxy.get("/__dumont/status", host="nobody.test")
        transition = proxy.get("/__dumont/transition", host="alice.test")
        no_transition = proxy.get("/__dumont/transition", host="nobody.test")
    assert event["state"] == "serving_standby"
    assert b"data: " not in bob_pending, "bob's stream told of alice's switch"
    alice, bob = (json.loads(statuses[name][2]) for name in ("alice", "bob"))
    assert (alice["active"], bob["active"]) == ("standby", "primary")
    assert unknown[0] == 404
    assert (transition[0], no_transition[0]) == (200, 404)


async def test_log_events_name_their_workspace(tmp_path: Path, backends: Backends) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log", "--log-format", "json") as proxy:
        await wait_serving(proxy, list(spaces))
        status, _ = await proxy.admin("POST", "/admin/workspaces/alice/failover")
        assert status == 200
        await wait_serving(proxy, ["alice"], role="standby")
        lines = [json.loads(line) for line in proxy.log_text().splitlines() if line.startswith("{")]
    events = [line for line in lines if "event" in line]
    assert {line["event"] for line in events} >= {"health_changed"}
    unnamed = [line for line in events if line.get("workspace") not in spaces]
    assert unnamed == [], f"{len(unnamed)} of {len(events)} events name no workspace"


async def test_a_hosts_only_put_keeps_the_workspaces_state_and_sockets(
    tmp_path: Path, backends: Backends
) -> None:
    spaces = {name: backends.pair(name, [f"{name}.test"]) for name in ("alice", "bob")}
    config = write_config(tmp_path / "proxy.toml", spaces)
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        await wait_serving(proxy, list(spaces))
        status, _ = await proxy.admin("POST", "/admin/workspaces/alice/failover")
        assert status == 200
        await wait_serving(proxy, ["alice"], role="standby")
        before = (await proxy.workspaces())["alice"]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(proxy.url + "/ws", headers={"Host": "alice.test"})
            await ws.send_str("whoami")
            assert (await ws.receive(timeout=5)).data == "alice-cpu"
            alice = spaces["alice"]
            status, body = await proxy.admin(
                "PUT",
                "/admin/workspaces/alice",
                document(["alice.test", "*.alice.example"], alice.primary, alice.standby),
            )
            assert (status, body["created"]) == (200, False), body
            # The same socket still works: only the names changed, not the machines.
            await ws.send_str("whoami")
            assert (await ws.receive(timeout=5)).data == "alice-cpu"
            await ws.close()
        after = (await proxy.workspaces())["alice"]
        assert proxy.backend_of("ide.alice.example") == "alice-cpu"
    assert (after["state"], after["epoch"]) == (before["state"], before["epoch"])
    assert after["hosts"] == ["alice.test", "*.alice.example"]


async def test_primary_and_standby_flags_are_the_default_workspace_answering_every_host(
    tmp_path: Path, backends: Backends
) -> None:
    gpu, cpu = backends.start("gpu"), backends.start("cpu")
    spaces = {"alice": backends.pair("alice", ["alice.test"])}
    config = write_config(tmp_path / "proxy.toml", spaces)
    flags = ("--primary", gpu, "--standby", cpu)
    with running_proxy(config, tmp_path / "proxy.log", *flags) as proxy:
        await wait_serving(proxy, ["default", "alice"])
        assert proxy.backend_of("alice.test") == "alice-gpu"
        for host in ("ide.example.org", "127.0.0.1", "[::1]:8888", "%%%garbage%%%"):
            assert proxy.backend_of(host) == "gpu", host
        status, body = raw_request(proxy.port, b"GET /work HTTP/1.0\r\n\r\n")
        assert (status, json.loads(body)["backend"]) == (200, "gpu")
        # The short forms of the commands are about "default".
        status, _ = await proxy.admin("POST", "/admin/failover")
        assert status == 200
        await wait_serving(proxy, ["default"], role="standby")
        assert proxy.backend_of("ide.example.org") == "cpu"
        assert proxy.backend_of("alice.test") == "alice-gpu"
