from __future__ import annotations

# The proxy core's fixtures: in-process proxies and backends on ephemeral ports.
from tests.proxy.conftest import make_proxy, upstream_processes, upstreams

__all__ = ["make_proxy", "upstream_processes", "upstreams"]
