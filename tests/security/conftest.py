from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.processes import Proc

from .rawnet import CountingUpstream, proxy_in_front

# Short limits so that slow-client tests take seconds; the defaults are in docs/SECURITY.md.
FAST_LIMITS = (
    "--limits-header-timeout",
    "1",
    "--limits-body-timeout",
    "1",
    "--limits-send-timeout",
    "2",
    "--limits-keepalive-timeout",
    "3",
    "--log-level",
    "warning",
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    yield from CountingUpstream().run()


@pytest.fixture(scope="module")
def proxy(upstream: CountingUpstream) -> Iterator[Proc]:
    proc = proxy_in_front(upstream, *FAST_LIMITS)
    try:
        yield proc
    finally:
        proc.stop()
