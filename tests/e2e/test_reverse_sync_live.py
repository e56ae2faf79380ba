"""Reverse sync against a standby that is still serving: found by the continuity run (issue 6).

The proxy keeps the user on the standby while ``before_failback`` (``dumont-provision sync
reverse``) copies the standby home, so the standby's files keep changing during the copy:
code-server rewrites its workspace state (``User/workspaceStorage/*/...``) and the user may still be
typing. reverse_sync's verification (a checksum dry run that must find no difference at all) then
fails on whatever changed after the copy, the hook exits 2 and the failback is abandoned. Seen in
a continuity run: ``user-data differs after reverse sync in 1 entries:
User/workspaceStorage/77504255/chatEditingSessions/.../state.json``.

This test writes one standby file every 50 ms during ``sync reverse``, as a live code-server does.
Reverse sync now verifies what the standby held before the copy started (by the standby's clock);
what changes after belongs to the window the switch home closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from provisioning.sync import SyncController
from tests.support.sshd import sshd
from tests.support.sync_bed import SyncBed, provision_cli, sync_bed
from tests.support.waiting import until

__all__ = ["sshd", "sync_bed"]  # fixtures

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


async def _keep_writing(path: object, stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        n += 1
        path.write_text(f'{{"state": {n}, "at": {time.time()}}}\n')  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    return n


async def test_reverse_sync_succeeds_while_the_standby_keeps_writing(sync_bed: SyncBed) -> None:
    bed = sync_bed
    controller = SyncController(bed.topology(delay=0.2))
    (bed.gpu_workspace / "a.txt").write_text("GPU\n")
    state = bed.gpu_user_data / "User" / "workspaceStorage" / "1234"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}\n")
    await controller.deploy(first_sync_timeout=60)
    await until(lambda: (bed.standby_workspace / "a.txt").exists(), "the first sync")
    assert provision_cli("sync", "fence", *bed.cli_flags()).returncode == 0
    live = bed.standby_user_data / "User" / "workspaceStorage" / "1234" / "state.json"
    stop = asyncio.Event()
    writer = asyncio.ensure_future(_keep_writing(live, stop))  # noqa: TID251 - ended below
    try:
        result = await asyncio.to_thread(provision_cli, "sync", "reverse", *bed.cli_flags())
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
    assert result.returncode == 0, result.stderr
