"""The replacement workflow called as a service, without the CLI: what gpu-lost --replace and
pair resume run, over the test's real sshd and rsync, with the fake clouds."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from provisioning.errors import UsageError
from provisioning.fence import is_fenced
from provisioning.gcp import StandbyVm
from provisioning.progress import quiet
from provisioning.replacement import (
    ReplacementPlan,
    primary_url,
    replacement_filler,
    wait_standby_provisioned,
)
from provisioning.store import Pair, PairState, PairStore
from provisioning.sync import SyncController
from provisioning.vast import VastInstance
from tests.provisioning.conftest import FakeClouds, SyncBed, pair_service
from tests.provisioning.test_prov_pairing import SPEC
from tests.provisioning.trees import tree_digest

pytestmark = pytest.mark.slow


async def test_waiting_for_the_standby_ends_when_its_start_up_script_has_run(
    sync_bed: SyncBed,
) -> None:
    controller = SyncController(sync_bed.topology())
    with pytest.raises(UsageError, match=r"standby not provisioned after 0\.2 s"):
        await wait_standby_provisioned(controller, timeout=0.2, progress=quiet, poll=0.05)
    sync_bed.standby_state.mkdir(parents=True, exist_ok=True)
    (sync_bed.standby_state / ".provisioned").touch()
    await wait_standby_provisioned(controller, timeout=5, progress=quiet, poll=0.05)


async def test_the_filler_fills_a_new_gpu_from_the_standby_without_the_cli(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path
) -> None:
    bed = sync_bed
    clouds.vast.ssh_port = bed.sshd.port
    store = tmp_path / "pairs.sqlite3"
    (bed.standby_workspace / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (bed.standby_workspace / "notes.txt").write_text("written on the standby\n")
    (bed.standby_workspace / "data.bin").write_bytes(os.urandom(300_000))

    def controller_for(pair: Pair, gpu: VastInstance, standby: StandbyVm) -> SyncController:
        return SyncController(bed.topology(delay=0.2))

    plan = ReplacementPlan(code_server_port=8080, timeout=120)
    async with pair_service(clouds, store) as service:
        pair = await service.create("frank", replace(SPEC, standby_user="root"))
        assert pair.gpu_instance_id is not None
        clouds.vast.set_status(pair.gpu_instance_id, "exited")
        fill = replacement_filler(controller_for, plan, quiet)
        pair = await service.gpu_lost("frank", reason="test", replace=True, fill=fill)

    assert PairStore(store).get("frank").state is PairState.READY
    assert tree_digest(bed.gpu_workspace) == tree_digest(bed.standby_workspace)
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))


def test_the_primary_url_is_the_port_vast_published() -> None:
    raw = {"id": 1, "ports": {"8080/tcp": [{"HostPort": "41080"}]}, "public_ipaddr": "203.0.113.9"}
    gpu = VastInstance.from_json(raw)
    assert primary_url(gpu, 8080) == "http://203.0.113.9:41080"
    assert primary_url(gpu, 9000) == "http://203.0.113.9:9000"
