"""Issue 15 from provisioning's side: ``pair create NAME`` registers the pair's workspace with the
proxy and ends once the proxy serves it, ``pair destroy`` removes it before the machines, ``pair
reconcile`` repairs missing and stale registrations. The real CLI, the real cloud clients against
the fake clouds, and :class:`ContractProxy` as the proxy's control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provisioning.cli import build_parser, main
from provisioning.parking import ProxyControl
from provisioning.settings import resolve
from provisioning.store import PairState, PairStore
from tests.provisioning.conftest import FakeClouds
from tests.provisioning.fake_vast import API_KEY
from tests.support.ports import free_port
from tests.support.processes import kill_group_async, start_proxy_async
from tests.support.proxies import url_of
from tests.support.upstream_app import make_upstream_app
from tests.support.waiting import until

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test"
TOKEN = "workspaces-test-token"
GPU_URL = "http://127.0.0.1:18080"  # the fake Vast maps the GPU's 8080/tcp to host port 18080
STANDBY_URL = "http://127.0.0.1:8080"  # the fake GCE gives every standby 127.0.0.1


# ------------------------------------------------------------------------------------------------
# ContractProxy MIRRORS THE CONTRACT of the proxy's workspace control API (issue 15), as agreed
# with the proxy's side while its endpoints were being written; it is not the proxy. Keep it to
# exactly that contract:
#   GET    /admin/workspaces         200 {"workspaces": [workspace, ...]}
#   GET    /admin/workspaces/{name}  200 workspace | 404 {"error", "detail"}
#   PUT    /admin/workspaces/{name}  {"hosts", "primary", "standby", "overrides"?}
#                                    200 {"workspace": ..., "created": bool}
#                                    400 {"error": "bad request", "detail": one line naming the
#                                    field}: bad URL, host claimed by another workspace, empty
#                                    hosts, unknown key; nothing changes
#   DELETE /admin/workspaces/{name}  200 {"deleted": name} | 404
#   workspace = {"name", "hosts", "primary", "standby", "overrides", "state", "active"}
#   names ^[a-z0-9][a-z0-9-]{0,62}$; bearer token on every call; `default` always exists.
# Replacing a workspace keeps its failover state when its backends are unchanged. Health is
# modelled, not probed: a workspace serves its primary after `polls_until_serving` GETs of it.
# ------------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_KEYS = {"hosts", "primary", "standby", "overrides"}


@dataclass
class ContractProxy:
    polls_until_serving: int = 2
    workspaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    before_put: Callable[[str], None] | None = None  # runs as a PUT arrives (a racing admin)
    on_delete: Callable[[str], None] | None = None
    _polls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workspaces["default"] = self._workspace(
            "default", [], "http://127.0.0.1:9", "http://127.0.0.1:10", {}
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/admin/workspaces", self._list)
        app.router.add_get("/admin/workspaces/{name}", self._get)
        app.router.add_put("/admin/workspaces/{name}", self._put)
        app.router.add_delete("/admin/workspaces/{name}", self._delete)
        return app

    def calls(self, method: str, name: str | None = None) -> list[Any]:
        path = "/admin/workspaces" + (f"/{name}" if name else "")
        return [body for m, p, body in self.requests if m == method and p == path]

    def _workspace(
        self, name: str, hosts: list[str], primary: str, standby: str, overrides: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "name": name,
            "hosts": hosts,
            "primary": primary,
            "standby": standby,
            "overrides": overrides,
            "state": "unavailable",
            "active": None,
        }

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _problem(401, "unauthorized", "missing or wrong bearer token")
        response: web.StreamResponse = await handler(request)
        return response

    def _seen(self, workspace: dict[str, Any]) -> dict[str, Any]:
        name = workspace["name"]
        self._polls[name] = self._polls.get(name, 0) + 1
        if self._polls[name] >= self.polls_until_serving:
            workspace |= {"state": "serving_primary", "active": "primary"}
        return workspace

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"workspaces": list(self.workspaces.values())})

    async def _get(self, request: web.Request) -> web.Response:
        workspace = self.workspaces.get(request.match_info["name"])
        if workspace is None:
            return _problem(404, "not found", f"no workspace {request.match_info['name']!r}")
        return web.json_response(self._seen(workspace))

    async def _put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.before_put is not None:
            self.before_put(name)
        body = await request.json()
        problem = _bad_field(name, body, self.workspaces)
        if problem:
            return _problem(400, "bad request", problem)
        old = self.workspaces.get(name)
        new = self._workspace(
            name,
            [h.lower() for h in body["hosts"]],
            body["primary"],
            body["standby"],
            body.get("overrides") or {},
        )
        if old is not None and (old["primary"], old["standby"]) == (new["primary"], new["standby"]):
            new |= {"state": old["state"], "active": old["active"]}  # failover state kept
        else:
            self._polls.pop(name, None)
        self.workspaces[name] = new
        return web.json_response({"workspace": new, "created": old is None})

    async def _delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.on_delete is not None:
            self.on_delete(name)
        if self.workspaces.pop(name, None) is None:
            return _problem(404, "not found", f"no workspace {name!r}")
        return web.json_response({"deleted": name})


def _problem(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


def _bad_field(name: str, body: Any, workspaces: dict[str, dict[str, Any]]) -> str | None:
    if not _NAME.match(name):
        return f"name: {name!r} is not a workspace name"
    if not isinstance(body, dict):
        return "body: expected a JSON object"
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        return f"{unknown[0]}: unknown key"
    hosts = body.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        return "hosts: expected a non-empty list of host names"
    for role in ("primary", "standby"):
        if not re.match(r"^https?://[^/\s]+/?$", str(body.get(role, ""))):
            return f"{role}: expected an http(s) URL, got {body.get(role)!r}"
    for other, workspace in workspaces.items():
        taken = {h.lower() for h in hosts} & set(workspace["hosts"])
        if other != name and taken:
            return f"hosts: {sorted(taken)[0]} is claimed by workspace {other!r}"
    return None


# ------------------------------------------------------------------------------------------------


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ContractProxy, str]]:
    contract = ContractProxy()
    server = TestServer(contract.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield contract, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@dataclass
class Cli:
    clouds: FakeClouds
    store: Path
    control: str
    key: Path

    def cloud_flags(self) -> list[str]:
        return [
            f"--vast-url={self.clouds.vast_url}", f"--gcp-endpoint={self.clouds.gcp_url}",
            "--gcp-anonymous", "--gcp-project=proj", "--gcp-zone=us-central1-a",
            "--poll-interval=0.01",
        ]  # fmt: skip

    def proxy_flags(self, control: str | None = None) -> list[str]:
        return [f"--proxy-control={control or self.control}", f"--admin-token={TOKEN}"]

    async def run(self, verb: str, *args: str, proxy: bool = True) -> int:
        argv = [f"--store={self.store}", "pair", verb, *args, *self.cloud_flags()]
        if verb == "create":
            argv += [f"--ssh-public-key={self.key}", "--gpu-name=RTX_4090"]
        if proxy and not any(a.startswith("--proxy-control") for a in args):
            argv += self.proxy_flags()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VAST_API_KEY", API_KEY)
            return await asyncio.to_thread(main, argv)


@pytest.fixture
def cli(clouds: FakeClouds, proxy: tuple[ContractProxy, str], tmp_path: Path) -> Cli:
    key = tmp_path / "k.pub"
    key.write_text(KEY)
    return Cli(clouds, tmp_path / "pairs.sqlite3", proxy[1], key)


def _one_error_line(err: str) -> str:
    line = err.strip().splitlines()[-1]
    assert line.startswith("dumont-provision: error: "), err
    return line.removeprefix("dumont-provision: error: ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


# ------------------------------------------------------------------------------------------------


async def test_create_registers_the_workspace_and_waits_until_it_is_served(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy
    contract.polls_until_serving = 4
    code = await cli.run("create", "alice", "--hosts=Alice.IDE.example.com,*.alice.example.org")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].startswith("alice\tready\tgpu=")
    assert out.splitlines()[1] == (
        "workspace alice: alice.ide.example.com, *.alice.example.org served by the primary"
    )
    assert contract.calls("PUT", "alice") == [
        {
            "hosts": ["alice.ide.example.com", "*.alice.example.org"],
            "primary": GPU_URL,
            "standby": STANDBY_URL,
        }
    ]
    # One GET before the PUT (for overrides to keep), then polls until the proxy served it.
    assert len(contract.calls("GET", "alice")) == 1 + contract.polls_until_serving
    assert contract.workspaces["alice"]["active"] == "primary"
    assert "registered workspace alice at the proxy" in err
    assert PairStore(cli.store).hosts("alice") == ("alice.ide.example.com", "*.alice.example.org")
    assert main([f"--store={cli.store}", "pair", "show", "--pair=alice"]) == 0
    assert "  workspace hosts: alice.ide.example.com, *.alice.example.org\n" in (
        capsys.readouterr().out
    )


async def test_hosts_default_to_the_base_domain_and_read_every_layer(
    cli: Cli, proxy: tuple[ContractProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    contract, _ = proxy
    assert await cli.run("create", "bob", "--base-domain=ide.example.com") == 0
    assert contract.workspaces["bob"]["hosts"] == ["bob.ide.example.com"]
    # --hosts: repeatable and comma-separated; the environment variable comma-separated.
    parser = build_parser()
    args = resolve(parser.parse_args(["pair", "create", "x", "--hosts=a.io,b.io", "--hosts=c.io"]))
    assert args.hosts == ["a.io", "b.io", "c.io"]
    monkeypatch.setenv("DUMONT_PROVISION_HOSTS", "d.io, e.io")
    assert resolve(parser.parse_args(["pair", "create", "x"])).hosts == ["d.io", "e.io"]


async def test_create_again_registers_again_without_duplicating(
    cli: Cli,
    proxy: tuple[ContractProxy, str],
    clouds: FakeClouds,
    capsys: pytest.CaptureFixture[str],
) -> None:
    contract, _ = proxy
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 0
    contract.workspaces["alice"]["overrides"] = {"health": {"interval": 0.5}}  # an operator's
    assert await cli.run("create", "alice") == 0  # the recorded hosts are used again
    assert "re-registered workspace alice" in capsys.readouterr().err
    assert list(contract.workspaces) == ["default", "alice"]
    first, again = contract.calls("PUT", "alice")
    assert again == first | {"overrides": {"health": {"interval": 0.5}}}  # kept, not wiped
    assert len(clouds.vast.instances) == 1  # and one GPU, as before issue 15
    # New hosts on a later create replace the old ones.
    assert await cli.run("create", "alice", "--hosts=alice.example.net") == 0
    assert contract.workspaces["alice"]["hosts"] == ["alice.example.net"]


async def test_destroy_removes_the_workspace_before_the_machines(
    cli: Cli,
    proxy: tuple[ContractProxy, str],
    clouds: FakeClouds,
    capsys: pytest.CaptureFixture[str],
) -> None:
    contract, _ = proxy
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 0
    machines_at_delete: list[tuple[int, int]] = []
    contract.on_delete = lambda name: machines_at_delete.append(
        (len(clouds.vast.instances), len(clouds.gcp.instances))
    )
    assert await cli.run("destroy", "alice") == 0
    assert machines_at_delete == [(1, 1)]  # both still there when the proxy let go
    assert "alice" not in contract.workspaces
    assert not clouds.vast.instances
    assert not clouds.gcp.instances
    assert "removed workspace alice from the proxy" in capsys.readouterr().err


async def test_destroy_tolerates_a_workspace_already_gone(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 0
    del contract.workspaces["alice"]  # someone removed it by hand
    assert await cli.run("destroy", "alice") == 0
    assert contract.calls("DELETE", "alice") == [None]
    assert "workspace alice was not registered at the proxy" in capsys.readouterr().err
    assert PairStore(cli.store).get("alice").state is PairState.DESTROYED


async def test_destroy_keeps_the_machines_while_the_proxy_cannot_be_told(
    cli: Cli, clouds: FakeClouds, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 0
    capsys.readouterr()
    dead = f"http://127.0.0.1:{_closed_port()}"
    assert await cli.run("destroy", "alice", f"--proxy-control={dead}") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"proxy admin API at {dead} unreachable")
    # Never routing to destroyed machines: they stay until the proxy has let go.
    assert len(clouds.vast.instances) == 1
    assert len(clouds.gcp.instances) == 1
    assert PairStore(cli.store).get("alice").state is PairState.DESTROYING
    assert await cli.run("destroy", "alice") == 0  # a retry finishes it
    assert not clouds.vast.instances


async def test_reconcile_repairs_missing_stale_and_destroyed_and_leaves_correct_alone(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy
    for name in ("alice", "bob", "carol", "dave"):
        assert await cli.run("create", name, f"--hosts={name}.ide.example.com") == 0
    assert await cli.run("destroy", "dave", "--proxy-control=") == 0  # the proxy not told
    del contract.workspaces["bob"]  # missing: the proxy lost it
    contract.workspaces["alice"] |= {"hosts": ["old.example.com"], "primary": "http://10.9.9.9:1"}
    contract.workspaces["stranger"] = contract.workspaces["carol"] | {
        "name": "stranger",
        "hosts": ["stranger.example.com"],
    }
    carol = dict(contract.workspaces["carol"])
    capsys.readouterr()
    contract.requests.clear()

    assert await cli.run("reconcile") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "alice: workspace updated (hosts, primary)",
        "bob: workspace registered (bob.ide.example.com)",
        "dave: workspace removed (pair destroyed)",
    ]
    assert contract.workspaces["alice"]["hosts"] == ["alice.ide.example.com"]
    assert contract.workspaces["alice"]["primary"] == GPU_URL
    assert contract.workspaces["bob"]["standby"] == STANDBY_URL
    assert "dave" not in contract.workspaces
    assert contract.workspaces["carol"] == carol  # correct: not even re-put
    assert contract.calls("PUT", "carol") == []
    assert "stranger" in contract.workspaces  # unknown to provisioning: kept without --prune

    contract.requests.clear()
    assert await cli.run("reconcile") == 0
    assert capsys.readouterr().out == "nothing to repair\n"
    assert [m for m, _, _ in contract.requests] == ["GET"]  # one list, no change

    assert await cli.run("reconcile", "--prune") == 0
    assert capsys.readouterr().out == "stranger: workspace pruned (no such pair in the store)\n"
    assert set(contract.workspaces) == {"default", "alice", "bob", "carol"}


async def test_reconcile_one_pair_and_a_refusal_exits_one(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 0
    assert await cli.run("create", "bob", "--hosts=bob.ide.example.com") == 0
    del contract.workspaces["alice"]
    del contract.workspaces["bob"]
    contract.workspaces["mallory"] = contract.workspaces["default"] | {
        "name": "mallory",
        "hosts": ["alice.ide.example.com"],
    }
    capsys.readouterr()
    assert await cli.run("reconcile", "bob") == 0  # NAME: only bob is looked at
    assert capsys.readouterr().out == "bob: workspace registered (bob.ide.example.com)\n"
    assert "alice" not in contract.workspaces
    assert await cli.run("reconcile") == 1
    assert capsys.readouterr().out == (
        "alice: workspace refused by the proxy: proxy admin API refused PUT"
        " /admin/workspaces/alice (HTTP 400): hosts: alice.ide.example.com is claimed by"
        " workspace 'mallory'\n"
    )


async def test_a_host_taken_or_malformed_stops_create_before_anything_is_rented(
    cli: Cli,
    proxy: tuple[ContractProxy, str],
    clouds: FakeClouds,
    capsys: pytest.CaptureFixture[str],
) -> None:
    contract, _ = proxy
    contract.workspaces["mallory"] = contract.workspaces["default"] | {
        "name": "mallory",
        "hosts": ["alice.ide.example.com"],
    }
    assert await cli.run("create", "alice", "--hosts=ALICE.ide.example.com") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert _one_error_line(err) == (
        "host alice.ide.example.com belongs to workspace 'mallory' at the proxy"
    )
    for bad, why in [
        ("https://alice.example.com", "a name only, without scheme, port or path"),
        ("alice.example.com:8443", "a name only, without scheme, port or path"),
        ("alice..example.com", "expected a DNS name or *.suffix"),
        ("*", "expected a DNS name or *.suffix"),
        ("10.0.0.5", "an address is no workspace's name"),
    ]:
        assert await cli.run("create", "alice", f"--hosts={bad}") == 2
        assert _one_error_line(capsys.readouterr().err) == f"bad host {bad!r}: {why}"
    assert await cli.run("create", "alice") == 2  # no hosts and no base domain
    assert "pair alice has no hosts for the proxy: pass --hosts" in capsys.readouterr().err
    assert await cli.run("create", "alice", "--hosts=a.example.com", proxy=False) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "--hosts needs --proxy-control: they are the workspace's at the proxy"
    )
    assert await cli.run("create", "default", "--hosts=d.example.com") == 2
    assert "pair 'default' cannot have a workspace of its own" in capsys.readouterr().err
    assert not clouds.vast.instances
    assert not clouds.gcp.instances
    assert contract.calls("PUT", "alice") == []


async def test_a_refused_put_is_one_line_and_registers_nothing(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy

    def another_admin_takes_the_host(name: str) -> None:
        contract.workspaces["mallory"] = contract.workspaces["default"] | {
            "name": "mallory",
            "hosts": ["alice.ide.example.com"],
        }

    contract.before_put = another_admin_takes_the_host  # after the check, before the PUT
    assert await cli.run("create", "alice", "--hosts=alice.ide.example.com") == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "pair alice is ready but its workspace is not registered: proxy admin API refused PUT"
        " /admin/workspaces/alice (HTTP 400): hosts: alice.ide.example.com is claimed by"
        " workspace 'mallory'; fix it and run pair create alice again"
    )
    assert "alice" not in contract.workspaces


async def test_an_unreachable_proxy_or_a_wrong_token_is_one_line(
    cli: Cli, clouds: FakeClouds, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    code = await cli.run("create", "alice", "--hosts=a.example.com", f"--proxy-control={dead}")
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert _one_error_line(err).startswith(f"proxy admin API at {dead} unreachable: ")
    assert not clouds.vast.instances  # checked before renting
    argv = ["--hosts=a.example.com", f"--proxy-control={cli.control}", "--admin-token=wrong"]
    assert await cli.run("create", "alice", *argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "proxy admin API refused GET /admin/workspaces (HTTP 401): missing or wrong bearer token"
    )
    assert await cli.run("create", "alice", "--hosts=a.example.com") == 0
    capsys.readouterr()
    assert await cli.run("reconcile", f"--proxy-control={dead}") == 2
    assert "unreachable" in _one_error_line(capsys.readouterr().err)


async def test_a_proxy_without_workspaces_is_one_line_before_anything_is_rented(
    cli: Cli, clouds: FakeClouds, capsys: pytest.CaptureFixture[str]
) -> None:
    old_proxy = TestServer(web.Application(), host="127.0.0.1")  # every path is a plain 404
    await old_proxy.start_server()
    try:
        control = f"http://127.0.0.1:{old_proxy.port}"
        argv = ["--hosts=a.example.com", f"--proxy-control={control}"]
        assert await cli.run("create", "alice", *argv) == 2
    finally:
        await old_proxy.close()
    assert _one_error_line(capsys.readouterr().err) == (
        f"the proxy at {control} has no workspaces API (a proxy from before issue 15):"
        " upgrade it, or leave out --hosts and base-domain"
    )
    assert not clouds.vast.instances


async def test_create_says_when_the_proxy_does_not_serve_in_time(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    contract, _ = proxy
    contract.polls_until_serving = 10**6  # no backend ever passes its checks
    code = await cli.run("create", "alice", "--hosts=a.example.com", "--serve-timeout=0.2")
    assert code == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "workspace alice is registered, but the proxy did not serve it within 0.2 s"
        " (state unavailable): it will once a backend passes its health checks"
    )
    # The registration is whole and right: reconcile finds nothing to change.
    assert contract.workspaces["alice"]["primary"] == GPU_URL
    assert await cli.run("reconcile", "alice") == 0
    assert capsys.readouterr().out == "nothing to repair\n"


async def test_pairs_without_hosts_leave_a_single_workspace_proxy_alone(
    cli: Cli, proxy: tuple[ContractProxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A pair created without a proxy (the single-workspace set-up, where the proxy's flags make
    it `default`) is not registered by reconcile, and reconcile does not even ask the proxy."""
    contract, _ = proxy
    assert await cli.run("create", "alice", proxy=False) == 0
    capsys.readouterr()
    assert await cli.run("reconcile") == 0
    assert capsys.readouterr().out == "nothing to repair\n"
    assert contract.requests == []
    assert await cli.run("destroy", "alice") == 0
    assert contract.requests == []


# ------------------------------------------------------------------------------------------------
# The same verbs against the real proxy (`python -m proxy`), once its workspace endpoints landed.


@pytest.mark.slow
async def test_the_real_proxy_serves_a_pair_by_host_after_create_and_reconcile(
    cli: Cli, clouds: FakeClouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # alice's GPU answers on 127.0.0.1:PORT, her standby on 127.0.0.2:PORT (the fake GCE's
    # address for every VM): the same code-server port on two machines, as in production.
    gpu = TestServer(make_upstream_app("alice-gpu"), host="127.0.0.1")
    await gpu.start_server()
    port = gpu.port
    assert port is not None
    standby = TestServer(make_upstream_app("alice-standby"), host="127.0.0.2", port=port)
    await standby.start_server()
    clouds.gcp.nat_ip = "127.0.0.2"
    default_backends = [TestServer(make_upstream_app(n), host="127.0.0.1") for n in ("d1", "d2")]
    for server in default_backends:
        await server.start_server()
    control, listen = free_port(), free_port()
    cli.control = f"http://127.0.0.1:{control}"
    proxy = await start_proxy_async(
        str(url_of(default_backends[0])), str(url_of(default_backends[1])), control,
        f"--listen=127.0.0.1:{listen}", f"--admin-token={TOKEN}", "--health-interval=0.2",
        log=tmp_path / "proxy.log",
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def backend_for(host: str) -> str | None:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = await client.get(
                        f"http://127.0.0.1:{listen}/whoami", headers={"Host": host}
                    )
                    return str(answer.json().get("backend"))
                return None

            await until(lambda: backend_for("x.example.com"), "the proxy serving default", 30)
            flags = ["--hosts=alice.ide.example.test", f"--code-server-port={port}"]
            assert await cli.run("create", "alice", *flags) == 0, capsys.readouterr().err
            out = capsys.readouterr().out
            assert "workspace alice: alice.ide.example.test served by the primary" in out
            # The command returned once the proxy served her: no waiting here.
            assert await backend_for("alice.ide.example.test") == "alice-gpu"
            assert await backend_for("ALICE.ide.example.test:443") == "alice-gpu"
            assert await backend_for("bob.ide.example.test") == "d1"  # default answers any Host
            # The park verbs' proxy commands address her workspace, not the default one.
            alices = ProxyControl(cli.control, TOKEN, 30, workspace="alice")
            await alices.switch_to("standby", "switchover: a test", "switchover")
            assert await backend_for("alice.ide.example.test") == "alice-standby"
            assert await backend_for("bob.ide.example.test") == "d1"
            await alices.switch_to("primary", "resume: a test", "resume")
            assert await backend_for("alice.ide.example.test") == "alice-gpu"

            headers = {"Authorization": f"Bearer {TOKEN}"}
            admin = f"{cli.control}/admin/workspaces"
            assert (await client.delete(f"{admin}/alice", headers=headers)).status_code == 200
            assert await backend_for("alice.ide.example.test") == "d1"
            assert await cli.run("reconcile", f"--code-server-port={port}") == 0
            assert capsys.readouterr().out == (
                "alice: workspace registered (alice.ide.example.test)\n"
            )

            async def alice_served() -> bool:
                return await backend_for("alice.ide.example.test") == "alice-gpu"

            await until(alice_served, "the proxy serving alice again", 30)
            assert await cli.run("reconcile", f"--code-server-port={port}") == 0  # all right
            assert capsys.readouterr().out == "nothing to repair\n"

            assert await cli.run("destroy", "alice") == 0
            listed = (await client.get(admin, headers=headers)).json()["workspaces"]
            assert [w["name"] for w in listed] == ["default"]
            assert await backend_for("alice.ide.example.test") == "d1"
    finally:
        await kill_group_async(proxy)
        for server in [gpu, standby, *default_backends]:
            await server.close()
