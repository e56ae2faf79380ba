"""``sync fence|reverse|status --proxy-control`` tell the real proxy how the file sync is.

The proxy here is the real one (in-process, its control listener on loopback, a bearer token); its
/metrics show what it was told. The GPU and standby are the test's sshd.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from provisioning.cli import main
from proxy.config import Config, HostPort, workspace_setting
from proxy.server import ProxyServer
from proxy.workspaces.spec import parse_workspace
from tests.support.sync_bed import SyncBed

TOKEN = "sync-report-token"


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyServer]:
    # No backend needs to answer: only the control API is used.
    server = ProxyServer(
        Config(
            primary=URL("http://127.0.0.1:9"),
            standby=URL("http://127.0.0.1:10"),
            listen=HostPort("127.0.0.1", 0),
            control_listen=HostPort("127.0.0.1", 0),
            admin_token=TOKEN,
            shutdown_timeout=1.0,
        )
    )
    await server.start()
    yield server
    await server.stop()


def _control(server: ProxyServer) -> str:
    assert server.control is not None
    return f"http://127.0.0.1:{server.control.address.port}"


async def _sync_state(server: ProxyServer) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{_control(server)}/metrics") as r:
        text = await r.text()
    states = re.findall(r'^dumont_sync_state\{state="(\w+)"\} 1\.0$', text, re.M)
    assert len(states) == 1, text
    state: str = states[0]
    return state


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_fence_reverse_and_status_report_the_sync_state(
    sync_bed: SyncBed, proxy: ProxyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    report = [f"--proxy-control={_control(proxy)}", f"--admin-token={TOKEN}"]
    flags = [*bed.cli_flags(), "--delay=0.2"]
    assert await _sync_state(proxy) == "unknown"
    assert await _cli("sync", "deploy", *flags) == 0
    assert await _cli("sync", "status", "--no-probe", *flags, *report) == 0
    assert await _sync_state(proxy) == "syncing"
    assert await _cli("sync", "fence", *flags, *report) == 0
    assert await _sync_state(proxy) == "fenced"
    (bed.standby_workspace / "written-on-standby.txt").write_text("home\n")
    assert await _cli("sync", "reverse", *flags, "--timeout=60", *report) == 0
    assert await _sync_state(proxy) == "syncing"
    assert (bed.gpu_workspace / "written-on-standby.txt").read_text() == "home\n"
    capsys.readouterr()


async def test_an_unreachable_proxy_never_fails_the_fence(
    sync_bed: SyncBed, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*sync_bed.cli_flags(), "--proxy-control=http://127.0.0.1:9", "--admin-token=x"]
    assert await _cli("sync", "fence", *flags) == 0
    err = capsys.readouterr().err
    assert "warning: sync state not reported to the proxy" in err


async def test_run_as_a_workspaces_hook_the_report_reaches_that_workspace(
    sync_bed: SyncBed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = parse_workspace(
        "alice",
        {
            "hosts": ["alice.test"],
            "primary": "http://127.0.0.1:9",
            "standby": "http://127.0.0.1:10",
        },
        workspace_setting,
    )
    server = ProxyServer(
        Config(
            listen=HostPort("127.0.0.1", 0),
            control_listen=HostPort("127.0.0.1", 0),
            admin_token=TOKEN,
            shutdown_timeout=1.0,
            workspaces=(alice,),
        )
    )
    await server.start()
    try:
        flags = [*sync_bed.cli_flags(), "--delay=0.2"]
        report = [f"--proxy-control={_control(server)}", f"--admin-token={TOKEN}"]
        assert await _cli("sync", "deploy", *flags) == 0
        monkeypatch.setenv("DUMONT_WORKSPACE", "alice")  # what the proxy gives alice's hooks
        assert await _cli("sync", "status", "--no-probe", *flags, *report) == 0
        assert server.sites.get("alice").board.sync.state == "syncing"
    finally:
        await server.stop()
    capsys.readouterr()
