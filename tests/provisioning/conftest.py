"""Fixtures for provisioning: fake cloud APIs on loopback; the sshd and the sync bed come from
tests/support (shared with tests/e2e)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from provisioning.gcp import StandbyVms, load_credentials
from provisioning.pairing import PairService
from provisioning.store import PairStore
from provisioning.vast import RetryPolicy, VastClient
from tests.provisioning.fake_gcp import FakeGcp
from tests.provisioning.fake_vast import API_KEY, FakeVast
from tests.support.sshd import sshd
from tests.support.sync_bed import SyncBed, sync_bed

# SyncBed stays importable from here for the park tests, which other work is changing now.
__all__ = ["SyncBed", "sshd", "sync_bed"]

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@dataclass
class FakeClouds:
    vast: FakeVast
    vast_url: str
    gcp: FakeGcp
    gcp_url: str


@pytest.fixture
async def clouds() -> AsyncIterator[FakeClouds]:
    vast, gcp = FakeVast(), FakeGcp()
    vast_server = TestServer(vast.app(), host="127.0.0.1")
    gcp_server = TestServer(gcp.app(), host="127.0.0.1")
    await vast_server.start_server()
    await gcp_server.start_server()
    try:
        yield FakeClouds(
            vast,
            f"http://127.0.0.1:{vast_server.port}",
            gcp,
            f"http://127.0.0.1:{gcp_server.port}",
        )
    finally:
        vast.release_all()
        gcp.release_all()
        await vast_server.close()
        await gcp_server.close()


@contextlib.asynccontextmanager
async def pair_service(clouds: FakeClouds, store: Path) -> AsyncIterator[PairService]:
    """The real clients, talking to the fakes, behind a PairService on a real SQLite store."""
    standbys = StandbyVms(
        "proj",
        "us-central1-a",
        credentials=load_credentials(None, anonymous=True),
        api_endpoint=clouds.gcp_url,
        retry=FAST_RETRY,
    )
    async with VastClient(API_KEY, base_url=clouds.vast_url, retry=FAST_RETRY) as vast:
        yield PairService(
            PairStore(store),
            vast,
            standbys,
            startup_script=lambda pair_id, spec: f"#!/bin/bash\n# {pair_id}\n",
            poll_interval=0.01,
        )
