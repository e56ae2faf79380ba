"""Pair lifecycle and reconcile: the real clients against both fake clouds, a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from provisioning.errors import NoOfferError, PairNotFound, UsageError
from provisioning.gcp import StandbyVm
from provisioning.pairing import PairService, PairSpec
from provisioning.store import Pair, PairState, PairStore
from provisioning.vast import VastInstance
from tests.provisioning.conftest import FakeClouds, pair_service

SPEC = PairSpec(
    gpu_query={"gpu_name": {"eq": "RTX_4090"}},
    image="vastai/base-image",
    disk_gb=40,
    standby_user="dumont",
    ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test",
)


@pytest.fixture
async def service(clouds: FakeClouds, tmp_path: Path) -> AsyncIterator[PairService]:
    async with pair_service(clouds, tmp_path / "pairs.sqlite3") as service:
        yield service


def store_of(tmp_path: Path) -> PairStore:
    return PairStore(tmp_path / "pairs.sqlite3")


async def test_create_rents_the_cheapest_gpu_then_the_standby(
    service: PairService, clouds: FakeClouds, tmp_path: Path
) -> None:
    pair = await service.create("alice", SPEC)
    assert pair.state is PairState.READY
    [gpu] = clouds.vast.instances.values()
    assert gpu["label"] == "dumont:alice:gpu:1"
    assert clouds.vast.created_bodies[0]["image"] == "vastai/base-image"
    assert [r for r in clouds.vast.requests if r[0] == "PUT"] == [("PUT", "/api/v0/asks/9002/")]
    assert clouds.gcp.instances["dumont-alice-standby"]["labels"]["dumont-pair"] == "alice"
    assert pair.gpu_instance_id == gpu["id"]
    again = await service.create("alice", SPEC)  # idempotent
    assert again.gpu_instance_id == pair.gpu_instance_id
    assert len(clouds.vast.instances) == 1
    assert [e.kind for e in store_of(tmp_path).events("alice")][-1] == "ready"


async def test_destroy_removes_both_machines(service: PairService, clouds: FakeClouds) -> None:
    await service.create("bob", SPEC)
    pair = await service.destroy("bob")
    assert pair.state is PairState.DESTROYED
    assert clouds.vast.instances == {}
    assert clouds.gcp.instances == {}


async def test_no_matching_offer_and_bad_or_unknown_ids(service: PairService) -> None:
    spec = PairSpec(**{**SPEC.to_json(), "gpu_query": {"gpu_name": {"eq": "H200"}}})
    with pytest.raises(NoOfferError, match="no Vast offer matches"):
        await service.create("carol", spec)
    with pytest.raises(UsageError, match="bad pair id 'Bad_Id'"):
        await service.create("Bad_Id", SPEC)
    with pytest.raises(PairNotFound, match="unknown pair 'nobody'"):
        await service.destroy("nobody")


async def test_gpu_lost_keeps_the_standby_and_replacement_is_filled_first(
    service: PairService, clouds: FakeClouds
) -> None:
    pair = await service.create("dave", SPEC)
    assert pair.gpu_instance_id is not None
    clouds.vast.set_status(pair.gpu_instance_id, "exited")  # spot interruption
    verdict = await service.check_gpu("dave")
    assert verdict.lost
    assert "exited" in verdict.reason
    degraded = await service.gpu_lost("dave", reason=verdict.reason)
    assert degraded.state is PairState.DEGRADED
    assert "dumont-dave-standby" in clouds.gcp.instances

    filled: list[tuple[str, int, str]] = []

    async def fill(p: Pair, gpu: VastInstance, standby: StandbyVm) -> None:
        filled.append((p.gpu_label, gpu.id, standby.name))

    ready = await service.gpu_lost("dave", reason="test", replace=True, fill=fill)
    assert ready.state is PairState.READY
    assert ready.gpu_generation == 2
    assert filled == [("dumont:dave:gpu:2", ready.gpu_instance_id, "dumont-dave-standby")]
    # The interrupted GPU is kept (its last unsynced second may matter); destroy takes both.
    assert len(clouds.vast.instances) == 2
    await service.destroy("dave")
    assert clouds.vast.instances == {}


async def test_reconcile_repairs_what_the_clouds_disagree_with(
    service: PairService, clouds: FakeClouds
) -> None:
    one = await service.create("one", SPEC)
    await service.create("two", SPEC)
    three = await service.create("three", SPEC)
    assert one.gpu_instance_id is not None
    assert three.gpu_instance_id is not None
    del clouds.vast.instances[one.gpu_instance_id]  # the user destroyed it on Vast's console
    del clouds.gcp.instances["dumont-two-standby"]  # a standby lost (deleted by hand)
    clouds.vast.set_status(three.gpu_instance_id, "offline")
    clouds.vast.instances[777] = {
        "id": 777,
        "label": "dumont:ghost:gpu:1",
        "actual_status": "running",
    }

    repairs = {str(r) for r in await service.reconcile(delete_orphans=True)}
    assert repairs == {
        "one: standby deleted (its GPU was destroyed on Vast)",
        "two: standby recreated",
        "three: marked degraded (GPU offline)",
        "ghost: orphan GPU destroyed (777)",
    }
    assert "dumont-one-standby" not in clouds.gcp.instances
    assert "dumont-two-standby" in clouds.gcp.instances
    assert 777 not in clouds.vast.instances
    assert await service.reconcile() == []  # converged
