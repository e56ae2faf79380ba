"""Bodies stream through the proxy: a 1 GiB download and upload leave its memory flat."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import Proc, start_proxy

GIB = 1 << 30


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.load
async def test_gib_each_way_with_flat_memory(upstream_processes: Callable[[str], Proc]) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_proxy(f"http://127.0.0.1:{gpu.port}", f"http://127.0.0.1:{cpu.port}")
    base = f"http://127.0.0.1:{proxy.port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/x") as r:  # warm up: imports, pools
                await r.read()
            before = peak_rss_mb(proxy.pgid)
            received = 0
            async with s.get(f"{base}/download/{GIB}") as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    received += len(chunk)
            assert received == GIB
            digest = hashlib.sha256()

            async def upload() -> AsyncIterator[bytes]:
                piece = b"u" * (1 << 20)
                for _ in range(GIB >> 20):
                    digest.update(piece)
                    yield piece

            async with s.post(f"{base}/upload", data=upload()) as r:
                seen = await r.json()
            assert seen["body_size"] == GIB
            assert seen["body_sha256"] == digest.hexdigest()
            after = peak_rss_mb(proxy.pgid)
    finally:
        proxy.stop()
    # 2 GiB went through; the proxy's peak grew by a few buffers, not by the bodies.
    assert after - before < 48, (
        f"peak RSS grew {after - before:.1f} MB ({before:.1f} -> {after:.1f})"
    )
