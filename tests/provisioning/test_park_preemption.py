"""The spot standby's preemption seen from inside the VM (issue 18): the start-up script's watcher
(bash and curl, exactly as rendered) long-polls a fake metadata server for ``preempted`` and
writes each value to a guest attribute; google-cloud-compute reads it back from the fake Compute
API; ``pair watch-standby`` raises the alert on the notice, restarts the VM once it stopped, and
the alert clears."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from provisioning.startup_script import (
    PREEMPTION_UNIT,
    render_preemption_watcher,
    render_startup_script,
)
from tests.provisioning.conftest import FakeClouds, SyncBed, pair_service
from tests.provisioning.fake_metadata import FakeMetadataServer
from tests.provisioning.park_bed import PAIR, pair_process, park_bed, until
from tests.provisioning.test_prov_pairing import SPEC

STANDBY = f"dumont-{PAIR}-standby"
ATTRIBUTE = "dumont/preempted"


@contextlib.asynccontextmanager
async def inside_the_vm(
    clouds: FakeClouds, tmp_path: Path
) -> AsyncIterator[tuple[FakeMetadataServer, str, Path]]:
    """The standby's metadata server, and its preemption watcher running against it (killed by
    process group at the end). Yields the server, its address and the watcher's log."""
    metadata = FakeMetadataServer(clouds.gcp, STANDBY)
    server = TestServer(metadata.app(), host="127.0.0.1")
    await server.start_server()
    script = tmp_path / "dumont-report-preempted"
    script.write_text(render_preemption_watcher())
    log = tmp_path / "watcher.log"
    host = f"127.0.0.1:{server.port}"
    with log.open("wb") as out:
        watcher = await asyncio.create_subprocess_exec(
            "bash", str(script), env=os.environ | {"GCE_METADATA_HOST": host},
            stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        yield metadata, host, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watcher.pid, signal.SIGKILL)
        await watcher.wait()
        await metadata.release()
        await server.close()


def reported(clouds: FakeClouds) -> str | None:
    return clouds.gcp.guest_attributes.get(STANDBY, {}).get(ATTRIBUTE)


async def test_the_vm_reports_its_preemption_notice_through_a_guest_attribute(
    clouds: FakeClouds, tmp_path: Path
) -> None:
    async with pair_service(clouds, tmp_path / "pairs.sqlite3") as service:
        await service.create(PAIR, SPEC)
        items = clouds.gcp.instances[STANDBY]["metadata"]["items"]
        assert {"key": "enable-guest-attributes", "value": "TRUE"} in items
        assert not await service.standbys.preempted(STANDBY)  # nothing written yet: 404
        async with inside_the_vm(clouds, tmp_path) as (metadata, host, log):
            # The first request (ETag 0) answers at once: a booted VM says FALSE.
            await until(lambda: reported(clouds) == "FALSE", "the boot's FALSE", 30)
            assert not await service.standbys.preempted(STANDBY)

            await metadata.preempt()  # GCE's notice, about 30 s before the VM stops
            await until(lambda: reported(clouds) == "TRUE", "the notice reported", 30)
            assert await service.standbys.preempted(STANDBY)
            assert "dumont: preempted=TRUE reported" in log.read_text()
            assert metadata.refused == []  # the watcher always said Metadata-Flavor: Google

            # The fake holds the documented line: no header, or a proxied request, is refused.
            async with httpx.AsyncClient() as client:
                url = f"http://{host}/computeMetadata/v1/instance/preempted"
                assert (await client.get(url)).status_code == 403
                flavor = {"Metadata-Flavor": "Google"}
                forwarded = flavor | {"X-Forwarded-For": "10.0.0.9"}
                assert (await client.get(url, headers=forwarded)).status_code == 403
                answer = await client.get(url, headers=flavor)
                assert (answer.text, answer.headers["Metadata-Flavor"]) == ("TRUE", "Google")


def test_the_start_up_script_installs_the_watcher_as_a_service(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0ZMcBGuTbDlmvKvU2e3iT0yTAGP0aKmSNjD5K2eNsE t@x"
    script = render_startup_script(pair_id=PAIR, ssh_user="root", ssh_public_key=key)
    assert render_preemption_watcher().rstrip("\n") in script
    assert f"systemctl enable {PREEMPTION_UNIT} && systemctl restart {PREEMPTION_UNIT}" in script


@pytest.mark.slow
async def test_watch_standby_alerts_on_the_notice_and_restarts_the_vm_once_it_stopped(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path
) -> None:
    async with (
        park_bed(clouds, sync_bed, tmp_path) as pb,
        inside_the_vm(clouds, tmp_path) as (metadata, _host, _log),
        pair_process(pb, "watch-standby", tmp_path / "watch.err", "--check-interval=0.2"),
    ):
        log = tmp_path / "watch.err"
        vm = clouds.gcp.instances[STANDBY]
        await until(lambda: reported(clouds) == "FALSE", "the boot's FALSE", 30)

        async def standby_is(state: str) -> bool:
            return bool((await pb.park_state())["standby"] == state)

        await metadata.preempt()
        await until(lambda: standby_is("missing"), "the alert on the notice", 30)
        # Known from inside the VM while the Compute API still says RUNNING.
        assert vm["status"] == "RUNNING"
        assert "reports GCE's preemption notice" in log.read_text()

        vm["status"] = "TERMINATED"  # GCE stops it (termination action STOP)
        await until(lambda: vm["status"] == "RUNNING", "the standby restarted", 60)
        await until(lambda: standby_is("present"), "the alert cleared", 30)
        assert f"standby {STANDBY} is TERMINATED (preempted): restarting it" in log.read_text()
        # The last boot's TRUE lingers until the restarted VM writes FALSE: not a new notice.
        await asyncio.sleep(1.0)
        assert await standby_is("present")
        await metadata.boot()
        await until(lambda: reported(clouds) == "FALSE", "the new boot's FALSE", 30)
        assert log.read_text().count("reports GCE's preemption notice") == 1

        proxy_log = pb.proxy_log.read_text()
        assert "standby VM present -> missing" in proxy_log
        assert "standby VM restarting -> present" in proxy_log
        metrics = await pb.metrics()
        assert 'dumont_standby_presence{state="present"} 1.0' in metrics
        assert 'dumont_standby_presence{state="missing"} 0.0' in metrics
