"""The meter of a long transfer: bytes, files, rate and ETA, printed every second by a named thread.

Named apart from provisioning.progress.Progress, which is one line per step of a workflow (renting a
GPU, booting a standby); this one counts bytes inside one step.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

__all__ = ["TransferMeter", "format_bytes"]


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class TransferMeter:
    """Thread-safe counters; ``start`` prints a line to ``stream`` every ``interval`` seconds."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.label = label
        self._stream = stream
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self.total_bytes = 0
        self.total_files = 0
        self.done_bytes = 0
        self.done_files = 0

    def set_totals(self, total_bytes: int, total_files: int) -> None:
        with self._lock:
            self.total_bytes, self.total_files = total_bytes, total_files

    def advance(self, byte_count: int, files: int = 0) -> None:
        with self._lock:
            self.done_bytes += byte_count
            self.done_files += files

    def line(self) -> str:
        with self._lock:
            done, total = self.done_bytes, self.total_bytes
            files, total_files = self.done_files, self.total_files
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 and total >= done else "?"
        return (
            f"{self.label}: {format_bytes(done)} / {format_bytes(total)}, "
            f"{files}/{total_files} files, {format_bytes(rate)}/s, ETA {eta}"
        )

    def start(self) -> None:
        self._started = time.monotonic()
        if self._stream is None:
            return
        self._thread = threading.Thread(target=self._report, name=f"{self.label}-progress")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._print()

    def _report(self) -> None:
        while not self._stop.wait(self._interval):
            self._print()

    def _print(self) -> None:
        if self._stream is not None:
            print(self.line(), file=self._stream, flush=True)
