"""Pairs end to end through the CLI: ``pair create --deploy-sync`` ends with files flowing, and a
spot interruption with ``gpu-lost --replace`` rents a GPU, fills it from the standby by reverse sync
over real sshd and rsync, restarts forward sync and tells the proxy's admin API. Only the two cloud
APIs and the proxy's admin endpoint are fakes; every rented "machine" is the test's sshd.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provisioning.cli import main
from provisioning.fence import is_fenced
from provisioning.store import PairState, PairStore
from provisioning.sync import SyncController
from tests.provisioning.conftest import FakeClouds, pair_service
from tests.provisioning.fake_vast import API_KEY
from tests.provisioning.test_prov_pairing import SPEC
from tests.provisioning.trees import tree_digest
from tests.support.sync_bed import SyncBed

pytestmark = pytest.mark.slow


async def _pair_cli(
    clouds: FakeClouds, bed: SyncBed, store: Path, verb: str, pair: str, *extra: str
) -> int:
    """``dumont-provision pair VERB`` against both fakes, every machine being the test's sshd."""
    argv = [
        f"--store={store}", "pair", verb, f"--pair={pair}", *extra,
        f"--vast-url={clouds.vast_url}", f"--gcp-endpoint={clouds.gcp_url}", "--gcp-anonymous",
        "--gcp-project=proj", "--gcp-zone=us-central1-a", "--poll-interval=0.01",
        f"--standby-ssh-port={bed.sshd.port}", "--delay=0.2",
        *[f for f in bed.cli_flags() if not f.startswith(("--gpu=", "--standby="))],
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAST_API_KEY", API_KEY)
        return await asyncio.to_thread(main, argv)


# A pair behind a single-workspace proxy is its `default`; one registered by name (issue 15: its
# hosts recorded by `pair create --hosts`) has its own workspace, and only that one changes.
@pytest.mark.parametrize(
    ("hosts", "admin_path"),
    [
        (None, "/admin/backends/primary"),
        ("erin.example.com", "/admin/workspaces/erin/backends/primary"),
    ],
    ids=["default-workspace", "named-workspace"],
)
async def test_gpu_lost_with_replace_fills_the_new_gpu_and_registers_it(
    clouds: FakeClouds,
    sync_bed: SyncBed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    hosts: str | None,
    admin_path: str,
) -> None:
    bed = sync_bed
    clouds.vast.ssh_port = bed.sshd.port  # every rented GPU is reachable through the test sshd
    store = tmp_path / "pairs.sqlite3"
    async with pair_service(clouds, store) as service:
        pair = await service.create("erin", replace(SPEC, standby_user="root"))
    if hosts:
        PairStore(store).set_hosts("erin", (hosts,))
    assert pair.gpu_instance_id is not None
    clouds.vast.set_status(pair.gpu_instance_id, "exited")

    # What the user wrote on the standby while the GPU was gone; the new GPU starts empty.
    (bed.standby_workspace / "notebooks").mkdir(parents=True)
    (bed.standby_workspace / "notebooks" / "run.ipynb").write_text('{"cells": []}\n')
    (bed.standby_workspace / "data.bin").write_bytes(os.urandom(2_000_000))
    (bed.standby_user_data / "User").mkdir(parents=True)
    (bed.standby_user_data / "User" / "settings.json").write_text('{"workbench.colorTheme": 1}\n')

    registered: list[tuple[str | None, Any]] = []

    async def set_primary(request: web.Request) -> web.Response:
        registered.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"ok": True})

    admin = web.Application()
    admin.router.add_put(admin_path, set_primary)
    admin_server = TestServer(admin, host="127.0.0.1")
    await admin_server.start_server()
    try:
        code = await _pair_cli(
            clouds, bed, store, "gpu-lost", "erin", "--replace", "--reason=health checks failed",
            f"--proxy-control=http://127.0.0.1:{admin_server.port}", "--admin-token=s3cret",
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
    finally:
        await admin_server.close()

    pair = PairStore(store).get("erin")
    assert pair.state is PairState.READY
    assert pair.gpu_generation == 2
    assert registered == [("Bearer s3cret", {"url": "http://127.0.0.1:18080"})]
    for gpu_root, standby_root in (
        (bed.gpu_workspace, bed.standby_workspace),
        (bed.gpu_user_data, bed.standby_user_data),
    ):
        assert tree_digest(gpu_root) == tree_digest(standby_root)
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    controller = SyncController(bed.topology())
    assert (await controller.lsyncd_report()).running
    (bed.gpu_workspace / "from-the-new-gpu.txt").write_text("forward sync is back\n")
    for _ in range(300):
        if (bed.standby_workspace / "from-the-new-gpu.txt").exists():
            break
        await asyncio.sleep(0.1)
    assert (bed.standby_workspace / "from-the-new-gpu.txt").exists()


async def test_pair_create_with_deploy_sync_ends_with_files_flowing(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    clouds.vast.ssh_port = bed.sshd.port
    (tmp_path / "k.pub").write_text(SPEC.ssh_public_key)
    # What the standby's start-up script leaves behind when it is done.
    bed.standby_state.mkdir()
    (bed.standby_state / ".provisioned").touch()
    (bed.gpu_workspace / "train.py").write_text("print('hello')\n")
    code = await _pair_cli(
        clouds, bed, tmp_path / "pairs.sqlite3", "create", "frank", "--gpu-name=RTX_4090",
        f"--ssh-public-key={tmp_path / 'k.pub'}", "--deploy-sync",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "first full sync done" in err
    assert (bed.standby_workspace / "train.py").read_text() == "print('hello')\n"
    (bed.gpu_workspace / "later.txt").write_text("live\n")
    for _ in range(300):
        if (bed.standby_workspace / "later.txt").exists():
            break
        await asyncio.sleep(0.1)
    assert (bed.standby_workspace / "later.txt").read_text() == "live\n"


def _standby_diverges(bed: SyncBed) -> None:
    """The user's work on the standby after the snapshot: one file edited, one new, one deleted."""
    (bed.standby_workspace / "train.py").write_text("EPOCHS = 20  # edited on the standby\n")
    (bed.standby_workspace / "notes.md").write_text("# written on the standby\n")
    (bed.standby_workspace / "scratch.txt").unlink()


def _damage_snapshot(snapshots: Path) -> None:
    """Flip a byte in the middle of the biggest pack: the weights' blob no longer verifies."""
    pack = max((p for p in snapshots.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))


@pytest.mark.parametrize("snapshot", ["latest", "none", "damaged"])
async def test_replacement_gpu_is_filled_from_the_latest_snapshot_then_the_standby(
    clouds: FakeClouds,
    sync_bed: SyncBed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    snapshot: str,
) -> None:
    """The old GPU snapshotted its workspace (on itself, through ``sync snapshot``); after it is
    lost, the replacement restores that snapshot and the standby sends only what changed since.
    Without a usable snapshot the standby sends everything: the result is the same mirror."""
    bed = sync_bed
    snapshots = tmp_path / "bucket"  # the repository as the GPUs see it (here: a local path)
    weights = os.urandom(3_000_000)
    (bed.gpu_workspace / "weights.bin").write_bytes(weights)
    (bed.gpu_workspace / "train.py").write_text("EPOCHS = 10\n")
    (bed.gpu_workspace / "scratch.txt").write_text("temporary\n")
    (bed.gpu_workspace / "__pycache__").mkdir()
    (bed.gpu_workspace / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0" * 100)
    (bed.gpu_user_data / "User").mkdir(parents=True)
    (bed.gpu_user_data / "User" / "settings.json").write_text('{"editor.fontSize": 15}\n')
    snapshot_flags = [
        f"--snapshot-destination={snapshots}",
        f"--gpu-python={sys.executable}",  # the GPU's Python with the engine's libraries
    ]
    if snapshot != "none":
        code = await asyncio.to_thread(
            main, ["sync", "snapshot", *bed.cli_flags(), *snapshot_flags, "--keep=3"]
        )
        assert code == 0, capsys.readouterr().err
        assert "snapshot " in capsys.readouterr().out
    if snapshot == "damaged":
        _damage_snapshot(snapshots)
    # lsyncd had mirrored the GPU on the standby; then the GPU died and the user went on there.
    for gpu_root, standby_root in (
        (bed.gpu_workspace, bed.standby_workspace),
        (bed.gpu_user_data, bed.standby_user_data),
    ):
        standby_root.parent.mkdir(parents=True, exist_ok=True)
        rsync = ["rsync", "-a", f"{gpu_root}/", f"{standby_root}/"]
        await asyncio.to_thread(subprocess.run, rsync, check=True)
        shutil.rmtree(gpu_root)  # the replacement GPU starts with empty disks
        gpu_root.mkdir()
    shutil.rmtree(bed.standby_workspace / "__pycache__")  # excluded from sync: never on the standby
    _standby_diverges(bed)

    clouds.vast.ssh_port = bed.sshd.port
    store = tmp_path / "pairs.sqlite3"
    async with pair_service(clouds, store) as service:
        pair = await service.create("gina", replace(SPEC, standby_user="root"))
    assert pair.gpu_instance_id is not None
    clouds.vast.set_status(pair.gpu_instance_id, "exited")
    code = await _pair_cli(clouds, bed, store, "gpu-lost", "gina", "--replace", *snapshot_flags)
    err = capsys.readouterr().err
    assert code == 0, err

    for gpu_root, standby_root in (
        (bed.gpu_workspace, bed.standby_workspace),
        (bed.gpu_user_data, bed.standby_user_data),
    ):
        assert tree_digest(gpu_root) == tree_digest(standby_root)
    sent = re.search(r"the standby sent (\d+) files, (\d+) bytes", err)
    assert sent is not None, err
    files, size = int(sent.group(1)), int(sent.group(2))
    if snapshot == "latest":
        assert "restoring snapshot" in err
        # The weights came from the snapshot; the standby sent the edit, the new file, settings.
        assert size < 1000, err
        assert files <= 3, err
    else:
        expected = "no snapshot of" if snapshot == "none" else "snapshot not restored"
        assert expected in err
        assert size > len(weights), err
