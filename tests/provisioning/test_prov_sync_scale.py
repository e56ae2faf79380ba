"""Scale and failure reporting with real lsyncd (issue 5, proof 4, and "not silent" exits).

100,000 small files go over in the first full sync; a 1 GiB file written while lsyncd runs follows.
Completeness is checked by rsync itself: a checksum dry run from GPU to standby must list nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from provisioning.lsyncd_config import render_lsyncd_config
from provisioning.sync import SyncController
from tests.support.processes import kill_group_async
from tests.support.sync_bed import SyncBed

pytestmark = [pytest.mark.slow, pytest.mark.load]

SMALL_FILES = 100_000
BIG_FILE = 1 << 30


def make_small_files(root: Path) -> None:
    for d in range(200):
        directory = root / "many" / f"d{d:03d}"
        directory.mkdir(parents=True)
        for f in range(SMALL_FILES // 200):
            (directory / f"f{f:04d}.txt").write_bytes(b"x" * (d % 7 * 37 + f % 13))


def make_big_file(path: Path) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as stream:
        for i in range(BIG_FILE >> 20):
            # Every MiB distinct, so rsync cannot shortcut anything.
            stream.write(i.to_bytes(8, "little") + block[8:])


def differences(source: Path, target: Path) -> list[str]:
    result = subprocess.run(
        ["rsync", "-a", "--delete", "--checksum", "--dry-run", "--itemize-changes",
         f"{source}/", f"{target}/"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return [line for line in result.stdout.splitlines() if line.strip()]


async def test_100k_small_files_and_a_1_gib_file_sync_completely(sync_bed: SyncBed) -> None:
    bed = sync_bed
    started = time.monotonic()
    await asyncio.to_thread(make_small_files, bed.gpu_workspace)
    created = time.monotonic()
    controller = SyncController(bed.topology(delay=1.0))
    await controller.deploy(first_sync_timeout=400)
    first_sync = time.monotonic()

    await asyncio.to_thread(make_big_file, bed.gpu_workspace / "weights.bin")
    written = time.monotonic()
    target = bed.standby_workspace / "weights.bin"
    deadline = written + 300
    while not (target.exists() and target.stat().st_size == BIG_FILE):
        assert time.monotonic() < deadline, "the 1 GiB file did not arrive"
        await asyncio.sleep(0.5)
    arrived = time.monotonic()
    print(
        f"\n{SMALL_FILES} files created in {created - started:.1f} s, first full sync"
        f" {first_sync - created:.1f} s; 1 GiB written in {written - first_sync:.1f} s,"
        f" on the standby {arrived - written:.1f} s later"
    )
    assert await asyncio.to_thread(differences, bed.gpu_workspace, bed.standby_workspace) == []
    report = await controller.lsyncd_report()
    assert report.running
    assert report.watched_directories >= 201


async def test_inotify_watch_exhaustion_is_reported_not_silent(sync_bed: SyncBed) -> None:
    bed = sync_bed
    for d in range(50):
        (bed.gpu_workspace / f"dir{d}").mkdir()
    topology = bed.topology()
    config = bed.gpu_state / "lsyncd.lua"
    config.write_text(render_lsyncd_config(topology.roots, topology.sync_target, topology.settings))
    # A user namespace of its own with 10 inotify watches: the limit is per namespace, so the rest
    # of the machine is untouched. The pid file is what `sync status` reads.
    process = await asyncio.create_subprocess_exec(
        "unshare", "--user", "--map-root-user", "sh", "-c",
        f"echo 10 > /proc/sys/user/max_inotify_watches && exec lsyncd -nodaemon {config}",
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (bed.gpu_state / "lsyncd.pid").write_text(str(process.pid))
    try:
        assert await asyncio.wait_for(process.wait(), 60) != 0
    finally:
        await kill_group_async(process)
    report = await SyncController(topology).lsyncd_report()
    assert not report.running
    assert any("inotify watches" in p for p in report.problems), report.problems
    assert any("not running" in p for p in report.problems), report.problems
