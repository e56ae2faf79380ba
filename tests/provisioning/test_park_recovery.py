"""A resume (or park) killed at any step is finished or rolled back by ``pair reconcile``, with no
orphan GPU left running; and the planned switchover itself, through the CLI and the proxy's
``POST /admin/switchover`` (whose hook is ``sync flush``), loses nothing saved before it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from provisioning.cli import main
from provisioning.store import PairState, PairStore
from proxy.dashboard.table import render_status
from tests.provisioning.conftest import FakeClouds, SyncBed, pair_service
from tests.provisioning.fake_vast import API_KEY
from tests.provisioning.park_bed import PAIR, TOKEN, ParkBed, kill_pair_cli, park_bed, until

pytestmark = pytest.mark.slow


def _new_machine(bed: SyncBed) -> None:
    """A parked GPU was destroyed: the next one starts with empty disks."""
    for path in (bed.gpu_workspace, bed.gpu_user_data, bed.gpu_state):
        shutil.rmtree(path, ignore_errors=True)  # a killed resume may not have made them yet
    bed.gpu_state.mkdir()


async def _park(pb: ParkBed, capsys: pytest.CaptureFixture[str]) -> None:
    code = await pb.pair_cli("park", "--reason=idle")
    assert code == 0, capsys.readouterr().err
    _new_machine(pb.bed)


def _pair_gpus(clouds: FakeClouds) -> list[Any]:
    return [i for i in clouds.vast.instances.values() if str(i["label"]).startswith("dumont:pam:")]


# When to kill `pair resume`, and whether reconcile then finishes it (else: rolls it back).
RESUME_STEPS = ["while-renting", "rented-not-running", "while-filling", "filled-and-registered"]


@pytest.mark.parametrize("step", RESUME_STEPS)
async def test_a_killed_resume_is_finished_or_rolled_back_by_reconcile(
    clouds: FakeClouds,
    sync_bed: SyncBed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step: str,
) -> None:
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        await _park(pb, capsys)
        (sync_bed.standby_workspace / "while-parked.txt").write_text("mine\n")
        if step == "while-renting":
            # Vast processes the rent after the client died: the worst case for a leak.
            hang = clouds.vast.hang("GET", r"/instances/\d+/$")
            await kill_pair_cli(pb, "resume", hang.arrived.is_set)
            clouds.vast.release_all()
        elif step == "rented-not-running":
            clouds.vast.boot_polls = 10_000  # stays "loading"
            await kill_pair_cli(pb, "resume", lambda: bool(_pair_gpus(clouds)))
        elif step == "while-filling":

            async def filling() -> bool:
                return "filling" in (await pb.park_state())["detail"]

            await kill_pair_cli(pb, "resume", filling)
        else:
            registered = f"http://127.0.0.1:{pb.new_gpu_port}/"

            async def is_registered() -> bool:
                return bool((await pb.status())["backends"]["primary"]["url"] == registered)

            await kill_pair_cli(pb, "resume", is_registered)
        assert PairStore(pb.store).get(PAIR).state is PairState.RESUMING

        async with pair_service(clouds, pb.store) as service:
            repairs = [str(r) for r in await service.reconcile(PAIR)]
        pair = PairStore(pb.store).get(PAIR)
        if step == "filled-and-registered":
            assert repairs == [f"{PAIR}: resume finished ({pair.gpu_instance_id})"]
            assert pair.state is PairState.READY
            assert [g["id"] for g in _pair_gpus(clouds)] == [pair.gpu_instance_id]
            assert (sync_bed.gpu_workspace / "while-parked.txt").read_text() == "mine\n"
        else:
            assert pair.state is PairState.PARKED, repairs
            assert _pair_gpus(clouds) == []  # no orphan GPU costs money
            assert repairs[0].startswith(f"{PAIR}: resume rolled back"), repairs
            # And the pair resumes cleanly afterwards.
            clouds.vast.boot_polls = 1
            _new_machine(sync_bed)
            assert await pb.pair_cli("resume") == 0, capsys.readouterr().err
            assert await pb.serving("primary")
            assert (sync_bed.gpu_workspace / "while-parked.txt").read_text() == "mine\n"


async def test_a_park_killed_before_its_snapshot_finished_keeps_the_gpu(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path
) -> None:
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id

        async def snapshotting() -> bool:
            return "snapshotting" in (await pb.park_state())["detail"]

        await kill_pair_cli(pb, "park", snapshotting)
        assert PairStore(pb.store).get(PAIR).state is PairState.PARKING
        async with pair_service(clouds, pb.store) as service:
            repairs = [str(r) for r in await service.reconcile(PAIR)]
        assert repairs == [f"{PAIR}: park rolled back (the GPU keeps running)"]
        assert PairStore(pb.store).get(PAIR).state is PairState.READY
        assert gpu_id in clouds.vast.instances


async def test_switchover_through_the_cli_and_the_control_api_loses_nothing(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed = sync_bed
    async with park_bed(clouds, bed, tmp_path) as pb:
        gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id
        (bed.gpu_workspace / "a.txt").write_text("saved 100 ms before the command\n")
        await asyncio.sleep(0.1)
        code = await pb.pair_cli("switchover", "--reason=maintenance")
        assert code == 0, capsys.readouterr().err
        assert (bed.standby_workspace / "a.txt").read_text() == "saved 100 ms before the command\n"
        assert await pb.serving("standby")
        assert (await pb.status())["switches"][0]["reason"] == "switchover: maintenance"
        assert gpu_id in clouds.vast.instances  # a switchover leaves the GPU alone
        assert PairStore(pb.store).get(PAIR).state is PairState.READY

        # Home again through the usual failback (before_failback: sync reverse).
        response = await pb.client.post(f"{pb.control}/admin/failback", headers=pb.headers)
        assert response.status_code == 200, response.text
        await until(lambda: pb.serving("primary"), "the failback", 170)

        # The proxy's own command: its switchover hook (sync flush) runs before the switch.
        (bed.gpu_workspace / "b.txt").write_text("saved 100 ms before the API call\n")
        await asyncio.sleep(0.1)
        response = await pb.client.post(
            f"{pb.control}/admin/switchover", headers=pb.headers, json={"reason": "drill"}
        )
        assert response.status_code == 200, response.text
        assert (bed.standby_workspace / "b.txt").read_text() == "saved 100 ms before the API call\n"
        await until(lambda: pb.serving("standby"), "the switchover", 60)
        assert (await pb.status())["switches"][0]["reason"] == "switchover: drill"


async def test_a_failing_switchover_hook_keeps_the_gpu_serving(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path
) -> None:
    bed = sync_bed
    (bed.gpu_workspace / "model.pt").write_bytes(b"weights\n")
    async with park_bed(clouds, bed, tmp_path) as pb:
        (bed.standby_workspace / "model.pt").unlink()
        (bed.standby_workspace / "model.pt").mkdir()  # rsync cannot put the file there
        (bed.standby_workspace / "model.pt" / "stray").write_text("x\n")
        response = await pb.client.post(f"{pb.control}/admin/switchover", headers=pb.headers)
        assert response.status_code == 409, response.text
        assert "switchover hook failed, the primary keeps serving" in response.text
        assert "model.pt" in response.text
        assert await pb.serving("primary")


async def test_a_preempted_standby_is_restarted_and_the_proxy_says_so_meanwhile(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        vm = clouds.gcp.instances["dumont-pam-standby"]
        vm["status"] = "TERMINATED"  # a spot preemption with instanceTerminationAction STOP
        cloud = [f for f in pb.cli_flags() if f.startswith(("--vast-url", "--gcp-", "--poll"))]
        proxy = [f"--proxy-control={pb.control}", f"--admin-token={TOKEN}"]
        argv = [f"--store={pb.store}", "pair", "reconcile", f"--pair={PAIR}", *cloud, *proxy]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VAST_API_KEY", API_KEY)
            assert await asyncio.to_thread(main, argv) == 0
        captured = capsys.readouterr()
        assert captured.out == f"{PAIR}: standby started\n"
        assert "standby dumont-pam-standby is TERMINATED (preempted): restarting it" in captured.err
        assert vm["status"] == "RUNNING"
        log = pb.proxy_log.read_text()
        assert "standby VM present -> missing" in log  # the alert's series went to 1 ...
        assert "standby VM missing -> present" in log  # ... and back
        metrics = await pb.metrics()
        assert 'dumont_standby_presence{state="present"} 1.0' in metrics
        assert 'dumont_standby_presence{state="missing"} 0.0' in metrics
        # `dumont-proxy status` prints the same state.
        assert "standby VM: present" in render_status(await pb.status())
