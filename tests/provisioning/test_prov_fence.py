"""Fencing and reverse sync with real lsyncd, rsync and sshd (issue 5, proofs 2 and 3).

The standby's gate refuses the old primary's writes once fenced; the CLI lines are the ones the
proxy's hooks run (docs/PROVISIONING.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import replace

import pytest

from provisioning.errors import ReverseSyncError
from provisioning.fence import is_fenced
from provisioning.reverse_sync import reverse_sync
from provisioning.sync import SyncController
from tests.provisioning.trees import tree_digest
from tests.support.processes import kill_group_async
from tests.support.sync_bed import SyncBed, provision_cli
from tests.support.waiting import until

pytestmark = pytest.mark.slow


async def start_synced(bed: SyncBed, *, delete: str) -> SyncController:
    controller = SyncController(bed.topology(delay=0.2, delete=delete))
    (bed.gpu_workspace / "a.txt").write_text("written on the GPU\n")
    (bed.gpu_workspace / "keep.txt").write_text("keep me\n")
    (bed.gpu_user_data / "User").mkdir()
    (bed.gpu_user_data / "User" / "settings.json").write_text('{"editor.fontSize": 15}\n')
    await controller.deploy(first_sync_timeout=60)
    await until(lambda: (bed.standby_workspace / "keep.txt").exists(), "the first sync")
    assert (bed.standby_user_data / "User" / "settings.json").exists()
    return controller


async def test_fenced_standby_refuses_a_returning_primary_with_delete(sync_bed: SyncBed) -> None:
    bed = sync_bed
    controller = await start_synced(bed, delete="true")  # the seed's dangerous setting

    fence = provision_cli("sync", "fence", *bed.cli_flags())
    assert fence.returncode == 0, fence.stderr
    assert "lsyncd stopped on the GPU" in fence.stdout
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))

    # The standby serves the user now and writes.
    (bed.standby_workspace / "a.txt").write_text("edited on the standby\n")
    (bed.standby_workspace / "new-on-standby.txt").write_text("only here\n")
    # The old primary comes back with a stale tree and restarts lsyncd with delete = true.
    (bed.gpu_workspace / "keep.txt").unlink()
    (bed.gpu_workspace / "a.txt").write_text("stale GPU version, much newer mtime\n")
    os.utime(bed.gpu_workspace / "a.txt", (time.time() + 3600, time.time() + 3600))
    await controller.start()

    async def refused_twice() -> bool:
        return (await controller.lsyncd_report()).failing_retries >= 2

    await until(refused_twice, "lsyncd to be refused twice", timeout=60)
    assert (bed.standby_workspace / "a.txt").read_text() == "edited on the standby\n"
    assert (bed.standby_workspace / "new-on-standby.txt").exists()
    assert (bed.standby_workspace / "keep.txt").read_text() == "keep me\n"

    status = provision_cli("sync", "status", "--no-probe", *bed.cli_flags())
    assert status.returncode == 1  # unhealthy, and it says why
    assert "fenced" in status.stdout
    assert "times in a row" in status.stdout


async def test_fence_holds_when_the_gpu_is_unreachable(sync_bed: SyncBed) -> None:
    bed = sync_bed
    await SyncController(bed.topology()).deploy(start=False)  # the gate is what matters here
    flags = [f for f in bed.cli_flags() if not f.startswith("--gpu=")]
    # A silent death: the kernel still completes the TCP handshake, nothing ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result = provision_cli(
            "sync", "fence", f"--gpu=root@127.0.0.1:{silent.getsockname()[1]}", *flags
        )
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "GPU not reached" in result.stdout
    assert took < 60  # bounded by the 1 s connect timeout, not by ssh's defaults
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert provision_cli("sync", "unfence", *bed.cli_flags()).returncode == 0
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))


async def test_reverse_sync_brings_every_standby_write_home_byte_for_byte(
    sync_bed: SyncBed,
) -> None:
    bed = sync_bed
    await start_synced(bed, delete="running")
    assert provision_cli("sync", "fence", *bed.cli_flags()).returncode == 0

    # The outage: the user works on the standby (new, changed, deleted, nested, binary, unsaved
    # editors in code-server's hot-exit backups).
    ws = bed.standby_workspace
    (ws / "src" / "deep").mkdir(parents=True)
    (ws / "src" / "deep" / "model.py").write_text("print('trained on the standby')\n")
    (ws / "a.txt").write_text("edited on the standby\n")
    (ws / "keep.txt").unlink()
    (ws / "weights.bin").write_bytes(os.urandom(3_000_000))
    backups = bed.standby_user_data / "Backups" / "1234" / "file"
    backups.mkdir(parents=True)
    (backups / "-7f3a").write_text("unsaved editor contents\n")
    # The GPU wrote something in its last second that never reached the standby.
    (bed.gpu_workspace / "last-second.txt").write_text("never synced\n")

    result = provision_cli("sync", "reverse", *bed.cli_flags())
    assert result.returncode == 0, result.stderr
    for gpu_root, standby_root in (
        (bed.gpu_workspace, bed.standby_workspace),
        (bed.gpu_user_data, bed.standby_user_data),
    ):
        expected = {k: v for k, v in tree_digest(standby_root).items() if ".dumont" not in k}
        actual = {k: v for k, v in tree_digest(gpu_root).items() if ".dumont" not in k}
        assert actual == expected
    # Nothing of the GPU's is thrown away: its divergent files are in the backup dir.
    kept = list((bed.gpu_state / "reverse-backups").rglob("last-second.txt"))
    assert [k.read_text() for k in kept] == ["never synced\n"]
    # The fence is lifted and forward sync runs again.
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    (bed.gpu_workspace / "after-failback.txt").write_text("forward again\n")
    await until(lambda: (ws / "after-failback.txt").exists(), "forward sync after failback")


async def test_reverse_sync_failure_keeps_the_fence_and_fails_the_hook(sync_bed: SyncBed) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "a.txt").write_text("written on the GPU\n")
    await SyncController(bed.topology()).deploy(start=False)
    # A standby root that vanished (say, a disk not mounted): the copy must fail, so the proxy's
    # before_failback hook exits non-zero and the failback is abandoned.
    topology = bed.topology(delay=0.2)
    missing = replace(topology.roots[0], standby_path=str(bed.root / "standby" / "not-mounted"))
    controller = SyncController(replace(topology, roots=(missing,)))
    with pytest.raises(ReverseSyncError, match="reverse sync of workspace failed"):
        await reverse_sync(controller)
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert (bed.gpu_workspace / "a.txt").read_text() == "written on the GPU\n"


async def test_stop_never_kills_what_a_stale_pid_file_names(sync_bed: SyncBed) -> None:
    """A GPU that crashed or rebooted keeps lsyncd's pid file; that number may now be the user's
    training job (or, in these tests, anything on the machine). Only our lsyncd may be killed."""
    bed = sync_bed
    controller = SyncController(bed.topology())
    bystander = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    try:
        pid_file = bed.gpu_state / "lsyncd.pid"
        assert str(pid_file) == controller.topology.settings.pid_path
        pid_file.write_text(f"{bystander.pid}\n")
        assert not (await controller.lsyncd_report()).running  # a live pid is not a live lsyncd
        await controller.stop()
        assert bystander.returncode is None, "stop killed a process that is not lsyncd"
        assert not pid_file.exists()
    finally:
        await kill_group_async(bystander)
