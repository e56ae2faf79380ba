"""HTTP/1.1 semantics of the data plane, byte for byte, against the real proxy process.

Framing is re-done by the proxy on both sides (proxy/dataplane/exchange.py): these pin what a
client sees for each shape of backend response and each kind of client, keep-alive included.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator

import pytest

from tests.support.processes import Proc
from tests.support.rawnet import (
    CANNED,
    CountingUpstream,
    connect,
    exchange,
    proxy,
    read_until_closed,
    status_of,
)

__all__ = ["proxy"]  # the fixture, in front of this module's closing upstream


class ClosingUpstream(CountingUpstream):
    """Also answers ``/close/<name>`` with a canned response, then closes the connection."""

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str) -> None:
        if path.startswith("/close/"):
            writer.write(CANNED[path.removeprefix("/close/")])
            await writer.drain()
            writer.close()
            return
        await super()._answer(writer, method, path)


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    yield from ClosingUpstream().run()


def request(
    path: str, extra: bytes = b"", version: bytes = b"1.1", method: bytes = b"GET"
) -> bytes:
    return b"%s %s HTTP/%s\r\nHost: ide.test\r\n%s\r\n" % (method, path.encode(), version, extra)


def read_response(sock: socket.socket, bodiless: bool = False) -> tuple[bytes, bytes]:
    """One whole response (head, body) from a kept-alive connection: Content-Length or chunked."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    if bodiless:
        return head, rest
    if (length := re.search(rb"(?i)\r\ncontent-length: (\d+)", head)) is not None:
        while len(rest) < int(length.group(1)):
            rest += sock.recv(65536)
        return head, rest
    if re.search(rb"(?i)\r\ntransfer-encoding: chunked", head):
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        return head, rest
    return head, rest  # bodiless (HEAD, 204, 304)


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


def assert_nothing_more(sock: socket.socket) -> None:
    sock.settimeout(0.3)
    try:
        extra = sock.recv(65536)
    except TimeoutError:
        extra = b""
    finally:
        sock.settimeout(5)
    assert extra == b"", f"bytes behind the response: {extra!r}"


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", f"bytes behind the last chunk: {body!r}"
            return out
        out, body = out + body[:size], body[size + 2 :]


def test_http10_client_gets_a_closing_response_without_chunks(proxy: Proc) -> None:
    CANNED["chunked"] = CHUNKED
    reply = exchange(proxy.port, request("/respond/chunked", version=b"1.0"))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert status_of(reply) == 200
    assert b"chunked" not in head.lower()
    assert body == b"hello world", reply  # ended by the connection's close, not left <open>


def test_http10_keep_alive_is_honoured(proxy: Proc) -> None:
    with connect(proxy.port) as sock:
        for i in range(2):
            sock.sendall(request(f"/c-ka10-{i}", b"Connection: keep-alive\r\n", version=b"1.0"))
            head, body = read_response(sock)
            assert status_of(head) == 200
            assert b"Connection: keep-alive" in head
            assert body == f"seen /c-ka10-{i}".encode()


def test_chunked_backend_answer_is_rechunked_for_http11(proxy: Proc) -> None:
    CANNED["chunked"] = CHUNKED
    with connect(proxy.port) as sock:
        sock.sendall(request("/respond/chunked"))
        head, body = read_response(sock)
        assert b"Transfer-Encoding: chunked" in head
        assert dechunk(body) == b"hello world"
        assert_nothing_more(sock)
        sock.sendall(request("/c-after-chunked"))  # the connection is still good
        assert read_response(sock)[1] == b"seen /c-after-chunked"


def test_close_delimited_backend_answer_is_chunked_for_the_browser(proxy: Proc) -> None:
    CANNED["until-close"] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    with connect(proxy.port) as sock:
        sock.sendall(request("/close/until-close"))
        head, body = read_response(sock)
        assert status_of(head) == 200
        assert dechunk(body) == b"all of it"
        assert_nothing_more(sock)  # one last chunk, not two (llhttp's empty piece at EOF)
        sock.sendall(request("/c-after-close-delimited"))
        assert read_response(sock)[1] == b"seen /c-after-close-delimited"


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("no-content", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
        ("not-modified", b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 99\r\n\r\n'),
    ],
)
def test_bodiless_statuses_keep_the_connection(proxy: Proc, name: str, answer: bytes) -> None:
    CANNED[name] = answer
    with connect(proxy.port) as sock:
        sock.sendall(request(f"/respond/{name}"))
        head, body = read_response(sock)
        assert status_of(head) in (204, 304)
        assert body == b""
        sock.sendall(request(f"/c-after-{name}"))
        assert read_response(sock)[1] == f"seen /c-after-{name}".encode()


def test_head_keeps_the_length_and_sends_no_body(proxy: Proc) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(request("/c-head", method=b"HEAD"))
        head, body = read_response(sock, bodiless=True)
        assert b"Content-Length: 12" in head  # len("seen /c-head")
        assert body == b""
        sock.sendall(request("/c-after-head"))
        # Had the proxy sent or expected a body, this answer would be misframed.
        head, body = read_response(sock)
        assert body == b"seen /c-after-head"


def test_expect_100_continue_is_answered_before_the_body(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(
            request("/c-expect", b"Content-Length: 5\r\nExpect: 100-continue\r\n", method=b"POST")
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        head, _ = read_response(sock)
        assert status_of(head) == 200
    [seen] = upstream.requests("/c-expect")
    assert seen.body == b"hello"
    assert "expect" not in {k.lower() for k, _ in seen.headers}


def test_interim_answers_are_not_taken_for_the_response(proxy: Proc) -> None:
    CANNED["early-hints"] = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    )
    with connect(proxy.port) as sock:
        sock.sendall(request("/respond/early-hints"))
        head, body = read_response(sock)
        assert status_of(head) == 200
        assert body == b"final"


def test_pipelined_requests_are_answered_in_order(proxy: Proc) -> None:
    data = (
        request("/c-pipe-a", b"Content-Length: 3\r\n", method=b"POST")
        + b"abc"
        + request("/c-pipe-b")
        + request("/c-pipe-c", b"Connection: close\r\n")
    )
    reply = exchange(proxy.port, data)
    bodies = re.findall(rb"seen (/c-pipe-\w)", reply)
    assert bodies == [b"/c-pipe-a", b"/c-pipe-b", b"/c-pipe-c"]
    assert not reply.endswith(b"<open>")


def test_garbage_behind_a_pipelined_request_is_refused_in_its_turn(proxy: Proc) -> None:
    reply = exchange(proxy.port, request("/c-before-garbage") + b"NOT HTTP AT ALL\r\n\r\n")
    first, _, rest = reply.partition(b"seen /c-before-garbage")
    assert status_of(first) == 200
    assert status_of(rest) == 400
    assert not reply.endswith(b"<open>")


def test_a_malformed_backend_answer_fails_that_request_alone(proxy: Proc) -> None:
    CANNED["garbage"] = b"HTTP/1.1 2x0 What\r\n\r\n"
    with connect(proxy.port) as sock:
        sock.sendall(request("/respond/garbage"))
        head, body = read_response(sock)
        assert status_of(head) == 502
        assert b"invalid response" in body
        sock.sendall(request("/c-after-garbage"))
        assert read_response(sock)[1] == b"seen /c-after-garbage"


def test_request_body_of_known_length_reaches_the_backend_whole(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many reads, past llhttp after the head
    with connect(proxy.port) as sock:
        sock.sendall(request("/c-upload", b"Content-Length: %d\r\n" % len(body), method=b"PUT"))
        sock.sendall(body)
        sock.sendall(request("/c-after-upload", b"Connection: close\r\n"))
        reply = read_until_closed(sock)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    [seen] = upstream.requests("/c-upload")
    assert seen.body == body
