"""End-to-end continuity tests need root for network namespaces; say so instead of skipping."""

from __future__ import annotations

import pytest

from tests.e2e.hosts import namespaces_available


@pytest.fixture(scope="session")
def namespaces() -> None:
    why = namespaces_available()
    if why:
        pytest.fail(f"the continuity test needs network namespaces (ip netns add): {why}")
