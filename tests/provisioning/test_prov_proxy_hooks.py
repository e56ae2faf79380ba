"""The documented hook lines, run by the real proxy (``python -m proxy``) on its admin commands.

The proxy is started as a process (provisioning never imports proxy/); its backends are two tiny
HTTP servers that only answer /healthz. Failover must fence the standby before traffic moves;
failback must bring the standby's writes home and lift the fence before the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from pathlib import Path

import httpx
import pytest

from provisioning.fence import is_fenced
from provisioning.sync import SyncController
from tests.support.ports import free_port
from tests.support.processes import kill_group_async, start_proxy_async
from tests.support.proxies import start_healthz_only
from tests.support.sync_bed import SyncBed
from tests.support.waiting import until

pytestmark = pytest.mark.slow
TOKEN = "hook-test-token"


async def test_proxy_hooks_fence_on_failover_and_reverse_sync_before_failback(
    sync_bed: SyncBed, tmp_path: Path
) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "before.txt").write_text("synced before the failover\n")
    await SyncController(bed.topology(delay=0.2)).deploy(first_sync_timeout=120)

    provision = tmp_path / "provision.toml"
    bed.write_provision_config(provision)
    command = f"{shlex.quote(sys.executable)} -m provisioning.cli --config {provision}"
    proxy_config = tmp_path / "dumont.toml"
    proxy_config.write_text(
        "[hooks]\n"
        f"before_failover = {command + ' sync fence'!r}\n"
        f"before_failback = {command + ' sync reverse'!r}\n"
        "timeout = 170\n".replace("'", '"')
    )
    backends = await start_healthz_only(2)
    control = free_port()
    proxy = await start_proxy_async(
        f"http://127.0.0.1:{backends[0].port}", f"http://127.0.0.1:{backends[1].port}", control,
        f"--admin-token={TOKEN}", "--failback=manual", f"--config={proxy_config}",
        log=tmp_path / "proxy.log",
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

            await until(control_up, "the proxy's control listener", 60)
            response = await client.post(f"{base}/admin/failover", headers=headers)
            assert response.status_code < 300, response.text
            await until(
                lambda: is_fenced(bed.sshd.host(), str(bed.standby_state)), "the fence", 120
            )
            (bed.standby_workspace / "during.txt").write_text("written on the standby\n")

            async def failback_accepted() -> bool:
                # 409 while the proxy is still switching (the fence hook runs before the switch).
                response = await client.post(f"{base}/admin/failback", headers=headers)
                assert response.status_code in (200, 202, 204, 409), response.text
                return response.status_code != 409

            await until(failback_accepted, "the proxy to accept a failback", 120)
            await until(lambda: (bed.gpu_workspace / "during.txt").exists(), "reverse sync", 170)
            await until(
                lambda: _not(is_fenced(bed.sshd.host(), str(bed.standby_state))), "unfence", 120
            )
        assert (bed.gpu_workspace / "during.txt").read_text() == "written on the standby\n"
    finally:
        await kill_group_async(proxy)
        for server in backends:
            await server.close()


async def _not(value: object) -> bool:
    assert asyncio.iscoroutine(value)
    return not await value
