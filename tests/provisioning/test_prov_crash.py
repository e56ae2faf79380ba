"""A crash at any step loses nothing and leaks nothing (issue 5, "Pairs").

``dumont-provision pair create`` (or ``destroy``) runs as a real process against the fake clouds;
the fakes hold one request at a chosen step, the test SIGKILLs the whole process group there, and
reconcile (the library, in this process: the CLI's import of google-cloud-compute costs seconds)
must converge to exactly one GPU and one standby (or none, for destroy).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from provisioning.store import PairState, PairStore
from tests.provisioning.conftest import FakeClouds, pair_service
from tests.provisioning.fake_vast import API_KEY
from tests.provisioning.test_prov_pairing import SPEC
from tests.support.processes import kill_group_async
from tests.support.sync_bed import start_provision_cli

pytestmark = pytest.mark.slow


def flags(clouds: FakeClouds, store: Path) -> list[str]:
    return [
        f"--store={store}",
        "pair",
        "{verb}",
        "--pair=crash",
        f"--vast-url={clouds.vast_url}",
        f"--gcp-endpoint={clouds.gcp_url}",
        "--gcp-anonymous",
        "--gcp-project=proj",
        "--gcp-zone=us-central1-a",
        "--poll-interval=0.05",
    ]


async def run_cli(
    clouds: FakeClouds, store: Path, verb: str, *extra: str, kill_when: asyncio.Event | None = None
) -> int:
    argv = [a.replace("{verb}", verb) for a in flags(clouds, store)] + list(extra)
    process = await start_provision_cli(*argv, env={"VAST_API_KEY": API_KEY})
    try:
        if kill_when is None:
            _, err = await asyncio.wait_for(process.communicate(), 120)
            assert process.returncode == 0, err.decode()
            return 0
        await asyncio.wait_for(kill_when.wait(), 60)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return process.returncode or 0
    finally:
        await kill_group_async(process)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin.pub"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test\n")
    return path


# (which cloud, method, path pattern): the request the process is killed on, still unanswered.
STEPS = [
    pytest.param("vast", "PUT", r"/asks/", id="while-renting-the-gpu"),
    pytest.param("vast", "GET", r"/instances/\d+/$", id="gpu-rented-but-id-not-stored"),
    pytest.param("gcp", "POST", r"/instances$", id="while-creating-the-standby"),
    pytest.param("gcp", "POST", r"/wait$", id="standby-created-operation-pending"),
]


@pytest.mark.parametrize(("cloud", "method", "pattern"), STEPS)
async def test_killed_create_is_finished_by_reconcile(
    clouds: FakeClouds, tmp_path: Path, key_file: Path, cloud: str, method: str, pattern: str
) -> None:
    store = tmp_path / "pairs.sqlite3"
    fake = clouds.vast if cloud == "vast" else clouds.gcp
    if (cloud, method) == ("vast", "PUT"):
        # Killed before the rent was answered, but Vast did process it: the worst case.
        hang = fake.hang("GET", r"/instances/\d+/$")
    else:
        hang = fake.hang(method, pattern)
    if pattern == r"/wait$":
        clouds.gcp.pending_polls = 2
    create = ("--ssh-public-key", str(key_file), "--gpu-name=RTX_4090")
    await run_cli(clouds, store, "create", *create, kill_when=hang.arrived)
    fake.release_all()
    clouds.gcp.pending_polls = 0

    assert PairStore(store).get("crash").state is PairState.CREATING  # nothing lost
    async with pair_service(clouds, store) as service:
        await service.reconcile()
    pair = PairStore(store).get("crash")
    assert pair.state is PairState.READY
    # Nothing leaked: exactly one GPU and one standby, and the store points at that GPU.
    assert [i["id"] for i in clouds.vast.instances.values()] == [pair.gpu_instance_id]
    assert list(clouds.gcp.instances) == ["dumont-crash-standby"]


async def test_killed_destroy_is_finished_by_reconcile(clouds: FakeClouds, tmp_path: Path) -> None:
    store = tmp_path / "pairs.sqlite3"
    async with pair_service(clouds, store) as service:
        await service.create("crash", SPEC)
    hang = clouds.gcp.hang("DELETE", r"/instances/dumont-crash-standby$")
    await run_cli(clouds, store, "destroy", kill_when=hang.arrived)
    clouds.gcp.release_all()
    assert PairStore(store).get("crash").state is PairState.DESTROYING
    async with pair_service(clouds, store) as service:
        await service.reconcile()
    assert PairStore(store).get("crash").state is PairState.DESTROYED
    assert clouds.vast.instances == {}
    assert clouds.gcp.instances == {}
