"""Progress of long steps (renting a GPU, booting a standby, the first full sync), one line each."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

__all__ = ["Progress", "StderrProgress", "quiet"]


class Progress(Protocol):
    def __call__(self, message: str) -> None: ...


def quiet(message: str) -> None:
    del message


class StderrProgress:
    """``[  12.3 s] message`` on stderr, so stdout stays machine-readable."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self._started
        print(f"[{elapsed:6.1f} s] {message}", file=self._stream, flush=True)
