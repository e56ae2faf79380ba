"""The proxy's fixtures live in tests/support/proxies.py, shared by import with every folder."""

from __future__ import annotations

from tests.support.h2client import certificate
from tests.support.proxies import make_proxy, upstream_processes, upstreams

__all__ = ["certificate", "make_proxy", "upstream_processes", "upstreams"]
