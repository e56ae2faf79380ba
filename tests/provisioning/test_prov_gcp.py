"""google-cloud-compute (REST transport, anonymous credentials) against a fake Compute API."""

from __future__ import annotations

import pytest

from provisioning.errors import CloudTransientError, UsageError
from provisioning.gcp import StandbySpec, StandbyVms, load_credentials
from provisioning.vast import RetryPolicy
from tests.provisioning.conftest import FakeClouds
from tests.provisioning.fake_gcp import GcpFault

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test"


def standbys(clouds: FakeClouds) -> StandbyVms:
    return StandbyVms(
        "proj-1",
        "europe-west4-a",
        credentials=load_credentials(None, anonymous=True),
        api_endpoint=clouds.gcp_url,
        retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02),
        timeout=5.0,
    )


def spec(name: str = "dumont-p1-standby") -> StandbySpec:
    return StandbySpec(
        name=name,
        labels={"dumont-pair": "p1", "dumont-role": "standby"},
        startup_script="#!/bin/bash\necho up\n",
        ssh_user="dumont",
        ssh_public_key=KEY,
    )


async def test_create_is_an_e2_medium_spot_vm_that_stops_on_preemption(clouds: FakeClouds) -> None:
    vm = await standbys(clouds).create(spec())
    assert vm.status == "RUNNING"
    assert vm.external_ip == "127.0.0.1"
    sent = clouds.gcp.instances["dumont-p1-standby"]
    assert sent["machineType"] == "zones/europe-west4-a/machineTypes/e2-medium"
    assert sent["scheduling"]["provisioningModel"] == "SPOT"
    assert sent["scheduling"]["instanceTerminationAction"] == "STOP"
    assert sent["labels"] == {"dumont-pair": "p1", "dumont-role": "standby"}
    metadata = {i["key"]: i["value"] for i in sent["metadata"]["items"]}
    assert metadata["startup-script"].startswith("#!/bin/bash")
    assert metadata["ssh-keys"] == f"dumont:{KEY}"
    assert ("POST", "/compute/v1/projects/proj-1/zones/europe-west4-a/instances") in (
        clouds.gcp.requests
    )
    assert set(clouds.gcp.authorization_headers) == {None}  # anonymous: nothing leaves


async def test_create_twice_adopts_the_first_vm(clouds: FakeClouds) -> None:
    vms = standbys(clouds)
    first = await vms.create(spec())
    second = await vms.create(spec())
    assert first.name == second.name
    assert list(clouds.gcp.instances) == ["dumont-p1-standby"]


async def test_half_finished_operations_are_waited_for(clouds: FakeClouds) -> None:
    clouds.gcp.pending_polls = 3
    vms = standbys(clouds)
    vm = await vms.create(spec())
    assert vm.status == "RUNNING"
    waits = [r for r in clouds.gcp.requests if r[1].endswith("/wait")]
    assert len(waits) == 3
    assert await vms.delete(vm.name) is True
    assert await vms.find(vm.name) is None


async def test_list_by_label_start_and_delete(clouds: FakeClouds) -> None:
    vms = standbys(clouds)
    await vms.create(spec())
    await vms.create(StandbySpec(**{**spec("other").__dict__, "labels": {"dumont-pair": "p2"}}))
    assert [v.name for v in await vms.list_by_label("dumont-pair", "p1")] == ["dumont-p1-standby"]
    assert len(await vms.list_by_label("dumont-pair")) == 2
    clouds.gcp.instances["other"]["status"] = "TERMINATED"  # preempted with action STOP
    assert (await vms.get("other")).stopped
    await vms.start("other")
    assert (await vms.get("other")).status == "RUNNING"
    assert await vms.delete("other") is True
    assert await vms.delete("other") is False


async def test_server_errors_are_retried_then_reported(clouds: FakeClouds) -> None:
    vms = standbys(clouds)
    clouds.gcp.faults.append(GcpFault("GET", "/instances/x$", status=503, times=1))
    assert await vms.find("x") is None
    clouds.gcp.faults.append(GcpFault("GET", "/instances/x$", status=429, times=5))
    with pytest.raises(CloudTransientError, match="429"):
        await vms.find("x")


def test_bad_zone_and_missing_project_are_one_line_errors() -> None:
    credentials = load_credentials(None, anonymous=True)
    with pytest.raises(UsageError, match="bad zone 'mars-1'"):
        StandbyVms("p", "mars-1", credentials=credentials)
    with pytest.raises(UsageError, match="missing Google Cloud project"):
        StandbyVms("", "us-central1-a", credentials=credentials)
