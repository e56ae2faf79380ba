"""Waiting for a condition in tests: poll it, fail with what was awaited when time runs out."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

__all__ = ["until", "wait_until"]


async def until(
    check: Callable[[], object], what: str = "the condition", timeout: float = 30.0,
    *, interval: float = 0.1,
) -> None:  # fmt: skip
    """Poll `check` (a function, or a coroutine function) until it returns something true;
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], object], what: str = "the condition", timeout: float = 15.0,
    *, interval: float = 0.05,
) -> None:  # fmt: skip
    """until() for code without an event loop: the thread sleeps between polls."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
