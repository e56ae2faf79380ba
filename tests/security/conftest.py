from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rawnet import CountingUpstream, proxy

__all__ = ["proxy", "upstream"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    yield from CountingUpstream().run()
