# ruff: noqa: E501 - canned responses read best one to a line
"""Backend responses get the requests' scrutiny before anything reaches the browser.

aiohttp's client parses responses leniently (control characters in values, codings other than
chunked, bare LF); proxy.validation refuses those with a 502 and drops the backend connection.
"""

from __future__ import annotations

import pytest

from tests.support.processes import Proc
from tests.support.rawnet import CANNED, CountingUpstream, exchange, get, status_of

OK_TAIL = b"Content-Length: 2\r\n\r\nok"
BAD_RESPONSES = {
    "ctl-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n" + OK_TAIL,
    "del-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n" + OK_TAIL,
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nok",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "cl-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + OK_TAIL,
    "cl-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + OK_TAIL,
    "ctl-in-reason": b"HTTP/1.1 200 O\x01K\r\n" + OK_TAIL,
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    "ctl-in-name": b"HTTP/1.1 200 OK\r\nX\x01A: 1\r\n" + OK_TAIL,
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_RESPONSES))
def test_ambiguous_response_is_502(proxy: Proc, upstream: CountingUpstream, name: str) -> None:
    CANNED[name] = BAD_RESPONSES[name]
    reply = get(proxy.port, f"/respond/{name}")
    # (A bad chunk size found after the head was sent would cut the body short instead.)
    assert status_of(reply) == 502, reply[:300]
    assert b"\x01" not in reply
    assert b"\x7f" not in reply
    assert status_of(get(proxy.port)) == 200


def test_extra_bytes_after_a_response_never_answer_the_next_request(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    # A backend that sends a second, unasked-for response behind the first one.
    CANNED["desync"] = (
        b"HTTP/1.1 200 OK\r\n" + OK_TAIL + b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nPOISON!"
    )
    assert status_of(get(proxy.port, "/respond/desync")) == 200
    for _ in range(5):
        assert b"POISON" not in get(proxy.port, "/c-after-desync")


WS_UPGRADE = (
    b"GET /respond/%s HTTP/1.1\r\nHost: ide.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


@pytest.mark.parametrize(
    ("name", "answer", "expected"),
    [
        ("ws-clean", SWITCH + b"\r\n", 101),
        ("ws-ctl-in-value", SWITCH + b"X-A: a\x01b\r\n\r\n", 502),
        ("ws-content-length", SWITCH + b"Content-Length: 5\r\n\r\nhello", 502),
        ("ws-chunked", SWITCH + b"Transfer-Encoding: chunked\r\n\r\n", 502),
    ],
)
def test_websocket_handshake_answer_gets_the_same_scrutiny(
    proxy: Proc, name: str, answer: bytes, expected: int
) -> None:
    CANNED[name] = answer
    reply = exchange(proxy.port, WS_UPGRADE % name.encode(), timeout=3)
    assert status_of(reply) == expected, reply[:300]
    assert b"\x01" not in reply
