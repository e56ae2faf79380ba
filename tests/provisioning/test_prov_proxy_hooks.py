"""The documented hook lines, run by the real proxy (``python -m proxy``) on its admin commands.

The proxy is started as a process (provisioning never imports proxy/); its backends are two tiny
HTTP servers that only answer /healthz. Failover must fence the standby before traffic moves;
failback must bring the standby's writes home and lift the fence before the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provisioning.fence import is_fenced
from provisioning.sync import SyncController
from tests.provisioning.conftest import SyncBed

pytestmark = pytest.mark.slow
TOKEN = "hook-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "lastHeartbeat": 0})


async def _until(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check() if callable(check) else check
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _provision_config(bed: SyncBed, path: Path) -> None:
    lines = ["[provisioning]"]
    for flag in bed.cli_flags():
        key, value = flag.removeprefix("--").split("=", 1)
        lines.append(f'{key} = "{value}"')
    lines.append("delay = 0.2")
    path.write_text("\n".join(lines) + "\n")


async def test_proxy_hooks_fence_on_failover_and_reverse_sync_before_failback(
    sync_bed: SyncBed, tmp_path: Path
) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "before.txt").write_text("synced before the failover\n")
    await SyncController(bed.topology(delay=0.2)).deploy(first_sync_timeout=120)

    provision = tmp_path / "provision.toml"
    _provision_config(bed, provision)
    command = f"{shlex.quote(sys.executable)} -m provisioning.cli --config {provision}"
    proxy_config = tmp_path / "dumont.toml"
    proxy_config.write_text(
        "[hooks]\n"
        f"before_failover = {command + ' sync fence'!r}\n"
        f"before_failback = {command + ' sync reverse'!r}\n"
        "timeout = 170\n".replace("'", '"')
    )
    backends = []
    for _ in range(2):
        app = web.Application()
        app.router.add_get("/healthz", _healthz)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        backends.append(server)
    control = _free_port()
    with (tmp_path / "proxy.log").open("w") as proxy_log:
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy",
            f"--primary=http://127.0.0.1:{backends[0].port}",
            f"--standby=http://127.0.0.1:{backends[1].port}",
            f"--listen=127.0.0.1:{_free_port()}", f"--control-listen=127.0.0.1:{control}",
            f"--admin-token={TOKEN}", "--failback=manual", f"--config={proxy_config}",
            start_new_session=True, stdout=asyncio.subprocess.DEVNULL, stderr=proxy_log,
        )  # fmt: skip
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{control}"
    try:
        async with httpx.AsyncClient(timeout=200) as client:

            async def control_up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"{base}/metrics")
                    return True
                return False

            await _until(control_up, "the proxy's control listener", 60)
            response = await client.post(f"{base}/admin/failover", headers=headers)
            assert response.status_code < 300, response.text
            await _until(
                lambda: is_fenced(bed.sshd.host(), str(bed.standby_state)), "the fence", 120
            )
            (bed.standby_workspace / "during.txt").write_text("written on the standby\n")

            async def failback_accepted() -> bool:
                # 409 while the proxy is still switching (the fence hook runs before the switch).
                response = await client.post(f"{base}/admin/failback", headers=headers)
                assert response.status_code in (200, 202, 204, 409), response.text
                return response.status_code != 409

            await _until(failback_accepted, "the proxy to accept a failback", 120)
            await _until(lambda: (bed.gpu_workspace / "during.txt").exists(), "reverse sync", 170)
            await _until(
                lambda: _not(is_fenced(bed.sshd.host(), str(bed.standby_state))), "unfence", 120
            )
        assert (bed.gpu_workspace / "during.txt").read_text() == "written on the standby\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proxy.pid, signal.SIGKILL)
        await proxy.wait()
        for server in backends:
            await server.close()


async def _not(value: object) -> bool:
    assert asyncio.iscoroutine(value)
    return not await value
