from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.h2client import certificate
from tests.support.proxies import make_proxy
from tests.support.rawnet import CountingUpstream, proxy

__all__ = ["certificate", "make_proxy", "proxy", "upstream"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    yield from CountingUpstream().run()
