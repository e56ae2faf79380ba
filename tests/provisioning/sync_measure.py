"""Measuring sync lag: write files on the GPU side, time their arrival on the standby side."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

# Mixed sizes, as an editor session produces: mostly small saves, some larger artefacts.
SIZES = (120, 2_000, 700, 16_000, 300, 64_000, 1_500, 250_000, 900, 1_000_000)


@dataclass(frozen=True)
class LagStats:
    count: int
    p50: float
    p95: float
    maximum: float

    def line(self) -> str:
        return (
            f"{self.count} writes: p50 {self.p50 * 1000:.0f} ms, p95 {self.p95 * 1000:.0f} ms,"
            f" max {self.maximum * 1000:.0f} ms"
        )


def measure_lag(
    source: Path, target: Path, *, writes: int = 200, spacing: float = 0.025, timeout: float = 60
) -> LagStats:
    """Write ``writes`` files ``spacing`` apart; poll the target every 5 ms for each arrival."""
    (source / "lag").mkdir(exist_ok=True)
    written: dict[str, tuple[float, int]] = {}
    arrived: dict[str, float] = {}
    next_write = time.monotonic()
    deadline = next_write + writes * spacing + timeout
    index = 0
    while len(arrived) < writes:
        now = time.monotonic()
        if index < writes and now >= next_write:
            name = f"lag/file-{index:04d}.bin"
            size = SIZES[index % len(SIZES)]
            (source / name).write_bytes(os.urandom(size))
            written[name] = (time.monotonic(), size)
            index += 1
            next_write += spacing
        for name, (at, size) in written.items():
            if name in arrived:
                continue
            try:
                if (target / name).stat().st_size == size:
                    arrived[name] = time.monotonic() - at
            except FileNotFoundError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(arrived)} of {writes} files arrived")
        time.sleep(0.005)
    lags = sorted(arrived.values())
    quantiles = statistics.quantiles(lags, n=100, method="inclusive")
    return LagStats(len(lags), quantiles[49], quantiles[94], lags[-1])
