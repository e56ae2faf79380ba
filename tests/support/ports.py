"""Loopback ports for tests and benchmarks: one the kernel just picked; waiting for a listener."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "port_open", "wait_for_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the kernel picks it); good enough on
    loopback, where nothing else races for ephemeral ports between the pick and the bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    exited: Callable[[], bool] = lambda: False,
    what: str = "a listener",
) -> None:
    """Return once host:port accepts connections; RuntimeError when `exited()` says the process
    that should listen is gone, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        if exited():
            raise RuntimeError(f"{what} exited before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:g} s")
        time.sleep(0.05)
