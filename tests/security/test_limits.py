"""Connection limits, in total and per client address, against the real proxy process."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.processes import Proc
from tests.support.rawnet import (
    CountingUpstream,
    connect,
    get,
    proxy_in_front,
    read_until_closed,
    status_of,
)


@pytest.fixture(scope="module")
def limited(upstream: CountingUpstream) -> Iterator[Proc]:
    proc = proxy_in_front(
        upstream,
        "--limits-max-connections-per-ip",
        "4",
        "--limits-header-timeout",
        "30",
        "--log-level",
        "error",
    )
    try:
        yield proc
    finally:
        proc.stop()


def test_per_address_limit_answers_429_and_frees_on_close(limited: Proc) -> None:
    held = [connect(limited.port) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(limited.port) as extra:
            reply = read_until_closed(extra, 5)
        assert status_of(reply) == 429, reply[:200]
        assert b"Retry-After: 5" in reply
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert status_of(get(limited.port)) == 200


def test_refused_connection_answer_survives_a_request_already_sent(limited: Proc) -> None:
    held = [connect(limited.port) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(limited.port) as extra:
            with contextlib.suppress(OSError):
                extra.sendall(b"GET / HTTP/1.1\r\nHost: ide.test\r\n\r\n")
            reply = read_until_closed(extra, 5)
        assert status_of(reply) == 429, reply[:200]
    finally:
        for sock in held:
            sock.close()


def test_total_limit_answers_503(upstream: CountingUpstream) -> None:
    proc = proxy_in_front(upstream, "--limits-max-connections", "3", "--log-level", "error")
    held: list[socket.socket] = []
    try:
        held = [connect(proc.port) for _ in range(3)]
        time.sleep(0.2)
        with connect(proc.port) as extra:
            reply = read_until_closed(extra, 5)
        assert status_of(reply) == 503, reply[:200]
    finally:
        for sock in held:
            sock.close()
        proc.stop()


def test_limits_are_per_listener_and_the_control_listener_stays_reachable(limited: Proc) -> None:
    control = limited.control_port
    held = [connect(limited.port) for _ in range(4)]
    try:
        time.sleep(0.2)
        assert status_of(get(control, "/admin/status")) == 200
    finally:
        for sock in held:
            sock.close()
