"""Issue 18 end to end: park the GPU with nothing lost, keep working on the standby, resume.

Real sshd, rsync and lsyncd move the files; the real proxy (a process) switches with its
documented hooks; only the clouds are fakes. A GPU's destruction is the fake's word plus the test
wiping the GPU's directories (a new machine starts with empty disks).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from provisioning.store import PairState, PairStore
from provisioning.sync import SyncController
from proxy.dashboard.table import render_status
from tests.provisioning.conftest import FakeClouds, SyncBed
from tests.provisioning.park_bed import PAIR, park_bed, until
from tests.provisioning.trees import tree_digest

pytestmark = pytest.mark.slow


async def test_park_loses_nothing_and_resume_brings_the_standbys_writes_home(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    (bed.gpu_user_data / "User").mkdir(parents=True)
    (bed.gpu_user_data / "User" / "settings.json").write_text('{"editor.fontSize": 15}\n')
    (bed.gpu_workspace / "weights.bin").write_bytes(os.urandom(1_000_000))
    async with park_bed(clouds, bed, tmp_path, resume_hook=True) as pb:
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id
        assert gpu_id in clouds.vast.instances
        # Saved 100 ms before the command: lsyncd (delay 0.2 s) has not sent it yet.
        (bed.gpu_workspace / "train.py").write_text("EPOCHS = 3  # saved just now\n")
        await asyncio.sleep(0.1)
        code = await pb.pair_cli("park", "--reason=GPU idle for 30 min")
        err = capsys.readouterr().err
        assert code == 0, err

        assert (bed.standby_workspace / "train.py").read_text() == "EPOCHS = 3  # saved just now\n"
        assert tree_digest(bed.gpu_workspace) == tree_digest(bed.standby_workspace)
        assert gpu_id not in clouds.vast.instances  # destroyed, only after all of the above
        assert await pb.serving("standby")
        switch = (await pb.status())["switches"][0]
        assert switch["reason"].startswith("park: "), switch
        pair = PairStore(pb.store).get(PAIR)
        assert (pair.state, pair.gpu_instance_id) == (PairState.PARKED, None)
        assert any(pb.snapshots.rglob("*")), "no snapshot was written"
        park = await pb.park_state()
        assert (park["phase"], park["gpu_per_hour"]) == ("parked", 0.31), park
        assert park["detail"].startswith("GPU parked: you're on the CPU machine")
        metrics = await pb.metrics()
        assert 'dumont_park_total{outcome="parked"} 1.0' in metrics
        assert "dumont_gpu_parked 1.0" in metrics
        assert "gpu: parked" in render_status(await pb.status())  # `dumont-proxy status`
        # The proxy's on_failover hook ran gpu-lost: a planned switch leaves the pair parked.
        await until(lambda: "planned switch" in pb.proxy_log.read_text(), "gpu-lost hook", 60)

        # The GPU is gone: a new one starts with empty disks. The user works on the standby.
        for path in (bed.gpu_workspace, bed.gpu_user_data, bed.gpu_state):
            shutil.rmtree(path)
        bed.gpu_state.mkdir()
        (bed.standby_workspace / "while-parked.md").write_text("# written on the CPU machine\n")
        (bed.standby_workspace / "train.py").write_text("EPOCHS = 5  # edited while parked\n")

        # The IDE's and the dashboard's button: the proxy runs its resume hook (pair resume).
        response = await pb.client.post(f"{pb.control}/admin/resume", headers=pb.headers)
        assert response.status_code == 202, response.text
        assert response.json()["phase"] == "resuming"
        again = await pb.client.post(f"{pb.control}/admin/resume", headers=pb.headers)
        assert again.status_code == 409, again.text
        new_gpu = f"http://127.0.0.1:{pb.new_gpu_port}/"

        async def resumed() -> bool:
            status = await pb.status()
            return bool(
                await pb.serving("primary") and status["backends"]["primary"]["url"] == new_gpu
            )

        await until(resumed, "the resumed GPU serving", 300)
        await until(lambda: "hook resume ok" in pb.proxy_log.read_text(), "the resume hook", 60)
        err = (tmp_path / "resume.err").read_text()
        assert "restoring snapshot" in err  # most bytes came from the snapshot
        assert (bed.gpu_workspace / "while-parked.md").exists()
        assert (bed.gpu_workspace / "train.py").read_text() == "EPOCHS = 5  # edited while parked\n"
        assert tree_digest(bed.gpu_workspace) == tree_digest(bed.standby_workspace)
        assert tree_digest(bed.gpu_user_data) == tree_digest(bed.standby_user_data)
        pair = PairStore(pb.store).get(PAIR)
        assert (pair.state, pair.gpu_generation) == (PairState.READY, 2)
        assert pair.gpu_instance_id in clouds.vast.instances
        park = await pb.park_state()
        assert park["phase"] == "active", park
        assert park["last_resume_s"] > 0
        assert park["parked_hours"] > 0
        assert "dumont_resume_seconds_count 1.0" in await pb.metrics()
        # Forward sync runs again from the new GPU.
        assert (await SyncController(bed.topology()).lsyncd_report()).running


async def test_a_flush_that_finds_a_difference_keeps_the_gpu(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "results.csv").write_text("epoch,loss\n1,0.5\n")
    os.utime(bed.gpu_workspace / "results.csv", (1_700_000_000, 1_700_000_000))
    async with park_bed(clouds, bed, tmp_path) as pb:
        # Something on the standby that rsync cannot replace (lsyncd watches only the GPU, so
        # the sync stays healthy): the flush must not paper over it.
        (bed.standby_workspace / "results.csv").unlink()
        (bed.standby_workspace / "results.csv").mkdir()
        (bed.standby_workspace / "results.csv" / "stray").write_text("x\n")
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id

        code = await pb.pair_cli("park")
        err = capsys.readouterr().err
        assert code == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("dumont-provision: error:"), err
        # rsync's own words name the file: it cannot put the GPU's file in the directory's place.
        assert "workspace differs on the standby in 2 entries:" in last
        assert "cannot delete non-empty directory: results.csv" in last

        assert gpu_id in clouds.vast.instances  # the GPU keeps running
        assert await pb.serving("primary")  # the user stays where they are
        assert PairStore(pb.store).get(PAIR).state is PairState.READY
        assert (await SyncController(bed.topology()).lsyncd_report()).running
        park = await pb.park_state()
        assert park["phase"] == "park_failed", park
        assert "differs on the standby" in park["detail"]
        assert 'dumont_park_total{outcome="failed"} 1.0' in await pb.metrics()


async def test_park_is_refused_without_a_standby_a_healthy_sync_or_the_gpu_serving(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id
        controller = SyncController(sync_bed.topology())

        await controller.stop()  # lsyncd died
        assert await pb.pair_cli("park") == 2
        assert "the sync is degraded: lsyncd is not running" in capsys.readouterr().err
        await controller.start()

        standby = clouds.gcp.instances.pop("dumont-pam-standby")  # preempted and deleted
        assert await pb.pair_cli("park") == 2
        assert "the standby dumont-pam-standby is missing" in capsys.readouterr().err
        clouds.gcp.instances["dumont-pam-standby"] = standby

        response = await pb.client.post(f"{pb.control}/admin/failover", headers=pb.headers)
        assert response.status_code == 200, response.text
        await until(lambda: pb.serving("standby"), "the admin failover", 60)
        assert await pb.pair_cli("park") == 2
        assert "not serving the GPU" in capsys.readouterr().err

        assert gpu_id in clouds.vast.instances
        assert PairStore(pb.store).get(PAIR).state is PairState.READY
        assert 'dumont_park_total{outcome="refused"} 3.0' in await pb.metrics()


async def test_a_failed_snapshot_keeps_the_gpu_running(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id
        code = await pb.pair_cli("park", "--gpu-python=/nonexistent/python3")
        err = capsys.readouterr().err
        assert code == 2, err
        assert "snapshot failed" in err.strip().splitlines()[-1]
        assert gpu_id in clouds.vast.instances
        assert PairStore(pb.store).get(PAIR).state is PairState.READY
        assert (await pb.park_state())["phase"] == "park_failed"


async def test_park_mode_stop_keeps_the_instance_and_resume_starts_it_again(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    async with park_bed(clouds, bed, tmp_path) as pb:
        clouds.vast.code_server_port = pb.new_gpu_port
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id
        assert gpu_id is not None
        assert await pb.pair_cli("park", "--park-mode=stop") == 0, capsys.readouterr().err
        assert clouds.vast.instances[gpu_id]["actual_status"] == "stopped"
        pair = PairStore(pb.store).get(PAIR)
        assert (pair.state, pair.gpu_instance_id) == (PairState.PARKED, gpu_id)
        (bed.standby_workspace / "while-stopped.txt").write_text("still here\n")
        # The provider's own 8080 mapping did not change: the proxy's primary is the old URL.
        clouds.vast.instances[gpu_id]["ports"]["8080/tcp"][0]["HostPort"] = str(pb.new_gpu_port)
        assert await pb.pair_cli("resume") == 0, capsys.readouterr().err
        assert clouds.vast.instances[gpu_id]["actual_status"] == "running"
        assert (bed.gpu_workspace / "while-stopped.txt").read_text() == "still here\n"
        assert await pb.serving("primary")
        assert PairStore(pb.store).get(PAIR).gpu_generation == 1


async def test_resume_without_an_offer_stays_parked_and_without_a_snapshot_fills_from_the_standby(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "data.bin").write_bytes(os.urandom(500_000))
    async with park_bed(clouds, bed, tmp_path) as pb:
        assert await pb.pair_cli("park") == 0, capsys.readouterr().err
        for path in (bed.gpu_workspace, bed.gpu_user_data, bed.gpu_state):
            shutil.rmtree(path)
        bed.gpu_state.mkdir()
        offers, clouds.vast.offers = clouds.vast.offers, []

        # Long enough for one retry even when the first search is slow on a loaded machine.
        code = await pb.pair_cli("resume", "--offer-retry-for=3", "--offer-retry-interval=0.2")
        err = capsys.readouterr().err
        assert code == 2, err
        assert "no GPU offer yet: trying again in 0.2 s" in err
        assert "no Vast offer matches" in err.strip().splitlines()[-1]
        pair = PairStore(pb.store).get(PAIR)
        assert (pair.state, pair.gpu_instance_id) == (PairState.PARKED, None)
        park = await pb.park_state()
        assert park["phase"] == "parked", park
        assert park["detail"].startswith("no GPU offer matches, still parked")
        assert not clouds.vast.instances

        clouds.vast.offers = offers
        shutil.rmtree(pb.snapshots)  # the bucket lost its snapshots: the standby sends it all
        assert await pb.pair_cli("resume") == 0
        err = capsys.readouterr().err
        assert "no snapshot of" in err or "snapshot not restored" in err, err
        assert tree_digest(bed.gpu_workspace) == tree_digest(bed.standby_workspace)
        assert await pb.serving("primary")
