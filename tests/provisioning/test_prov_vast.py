"""The real VastClient against a fake Vast.ai API that follows the documented v0 wire format."""

from __future__ import annotations

import pytest

from provisioning.errors import (
    CloudAuthError,
    CloudNotFound,
    CloudQuotaError,
    CloudTransientError,
)
from provisioning.vast import InstanceRequest, RetryPolicy, VastClient
from tests.provisioning.conftest import FakeClouds
from tests.provisioning.fake_vast import API_KEY, Fault

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


def client(clouds: FakeClouds, *, key: str = API_KEY, timeout: float = 5.0) -> VastClient:
    return VastClient(key, base_url=clouds.vast_url, retry=FAST_RETRY, timeout=timeout)


async def test_search_rent_show_list_destroy(clouds: FakeClouds) -> None:
    async with client(clouds) as vast:
        offers = await vast.search_offers({"gpu_name": {"eq": "RTX_4090"}})
        assert [o.id for o in offers] == [9002, 9001]  # cheapest first, A100 filtered out
        request = InstanceRequest(
            image="vastai/base-image", disk_gb=40, label="dumont:p1:gpu:1", onstart="echo hi",
            env={"A": "b"},
        )  # fmt: skip
        instance_id = await vast.create_instance(offers[0].id, request)
        body = clouds.vast.created_bodies[0]
        assert body == {
            "client_id": "me", "image": "vastai/base-image", "disk": 40, "label": "dumont:p1:gpu:1",
            "env": {"A": "b"}, "onstart": "echo hi", "runtype": "ssh",
        }  # fmt: skip
        shown = await vast.show_instance(instance_id)
        assert shown.label == "dumont:p1:gpu:1"
        assert shown.host_port(8080) == 18080
        assert [i.id for i in await vast.list_instances(label_prefix="dumont:p1:")] == [instance_id]
        assert await vast.list_instances(label_prefix="dumont:other:") == []
        await vast.destroy_instance(instance_id)
        with pytest.raises(CloudNotFound, match="Instance not found"):
            await vast.destroy_instance(instance_id)


async def test_bad_key_is_an_auth_error_with_the_api_message(clouds: FakeClouds) -> None:
    async with client(clouds, key="wrong") as vast:
        with pytest.raises(CloudAuthError, match="HTTP 401: auth_error: Invalid user key"):
            await vast.list_instances()


async def test_rate_limits_and_server_errors_are_retried(clouds: FakeClouds) -> None:
    clouds.vast.faults.append(Fault("GET", "/instances/", status=429, times=1))
    clouds.vast.faults.append(Fault("GET", "/instances/", status=502, times=1))
    async with client(clouds) as vast:
        assert await vast.list_instances() == []
    assert len([r for r in clouds.vast.requests if r[1] == "/api/v0/instances/"]) == 3


async def test_retries_give_up_with_a_transient_error(clouds: FakeClouds) -> None:
    clouds.vast.faults.append(Fault("GET", "/bundles/", status=503, times=10))
    async with client(clouds) as vast:
        with pytest.raises(CloudTransientError, match="HTTP 503"):
            await vast.search_offers({})


async def test_a_failed_rent_is_not_retried_blindly(clouds: FakeClouds) -> None:
    # A 500 on PUT may have rented the machine; the pairing layer looks by label instead.
    clouds.vast.faults.append(Fault("PUT", "/asks/", status=500, times=1))
    async with client(clouds) as vast:
        with pytest.raises(CloudTransientError):
            await vast.create_instance(9001, InstanceRequest("img", 10, "l"))
    assert len([r for r in clouds.vast.requests if r[0] == "PUT"]) == 1


async def test_slow_answers_time_out_and_are_retried(clouds: FakeClouds) -> None:
    clouds.vast.faults.append(Fault("GET", "/instances/", status=0, delay=2.0, times=1))
    async with client(clouds, timeout=0.5) as vast:
        assert await vast.list_instances() == []


async def test_quota_and_unknown_offer(clouds: FakeClouds) -> None:
    clouds.vast.faults.append(
        Fault("PUT", "/asks/", status=400, body={"success": False, "error": "insufficient_credit",
                                                "msg": "Your balance is too low"})
    )  # fmt: skip
    async with client(clouds) as vast:
        with pytest.raises(CloudQuotaError, match="balance is too low"):
            await vast.create_instance(9001, InstanceRequest("img", 10, "l"))
        with pytest.raises(CloudNotFound, match="no longer available"):
            await vast.create_instance(1, InstanceRequest("img", 10, "l"))
