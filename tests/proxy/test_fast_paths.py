"""The data plane's fast paths read the common request and response heads in one pass instead of
through llhttp's callbacks (proxy/dataplane/plain.py).
They must never change a byte of what either side sees: each case here goes through the proxy
twice, once whole in one write (the fast path) and once a byte at a time (llhttp reads a head it
never gets whole), and both trips must give the backend and the browser the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.processes import Proc
from tests.support.rawnet import CANNED, CountingUpstream, connect, proxy, status_of

__all__ = ["proxy"]  # the shared fixture: the proxy with FAST_LIMITS in front of `upstream`


class RecordingUpstream(CountingUpstream):
    """Keeps every request head byte for byte; ``/slow/<name>`` answers CANNED[name] in small
    pieces (a byte at a time when it is short), so the proxy never reads that head whole."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[bytes] = []
        self.heads_lock = threading.Lock()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        head = await super()._read_head(reader)
        if head is not None and b" /healthz " not in head.split(b"\r\n", 1)[0]:
            with self.heads_lock:
                self.heads.append(head)
        return head

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str) -> None:
        if not path.startswith("/slow/"):
            await super()._answer(writer, method, path)
            return
        answer = CANNED[path.removeprefix("/slow/")]
        step = 1 if len(answer) < 2048 else 4096
        for i in range(0, len(answer), step):
            writer.write(answer[i : i + step])
            await writer.drain()
            await asyncio.sleep(0.001)

    def last_head(self) -> bytes:
        with self.heads_lock:
            return self.heads[-1]


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    yield from RecordingUpstream().run()  # type: ignore[misc]


def _send(sock: socket.socket, data: bytes, whole: bool) -> None:
    pieces = [data] if whole else [data[i : i + 1] for i in range(len(data))]
    with contextlib.suppress(OSError):  # the proxy may refuse before all of it is sent
        for piece in pieces:
            sock.sendall(piece)


def _read_one(sock: socket.socket, bodiless: bool) -> bytes:
    """One response from a kept-alive connection (the cases all answer with a length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data + b"<closed>"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = head.lower().split(b"\r\n")
    length = next((int(f.split(b":")[1]) for f in fields if f.startswith(b"content-length:")), 0)
    if bodiless or b" 204 " in fields[0] or b" 304 " in fields[0]:
        length = 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return head + b"\r\n\r\n" + body + b"<closed>"
        body += chunk
    return head + b"\r\n\r\n" + body


def _trip(port: int, data: bytes, whole: bool) -> bytes:
    """What the browser gets for ``data`` sent whole or a byte at a time, and whether the
    connection stays usable (a second request on it)."""
    with connect(port) as sock:
        _send(sock, data, whole)
        first = _read_one(sock, bodiless=data.startswith(b"HEAD "))
        if b"connection: close" in first.lower() or first.endswith(b"<closed>"):
            return first
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: ide.test\r\n\r\n")
        return first + b"|" + _read_one(sock, bodiless=False)


REQUESTS = {
    "plain": b"GET /fp/plain HTTP/1.1\r\nHost: ide.test\r\n\r\n",
    "head": b"HEAD /fp/head HTTP/1.1\r\nHost: ide.test\r\n\r\n",
    "browser-like": (
        b"GET /fp/browser?x=1&y=%20 HTTP/1.1\r\nHost: ide.test\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n"
        b"Accept-Language: pt-BR,pt;q=0.9\r\nCookie: a=b; c=d\r\nSec-Fetch-Mode: cors\r\n\r\n"
    ),
    "spaces-and-tabs": b"GET /fp/ws HTTP/1.1\r\nHost:ide.test\r\nX-A: \t v a l \t \r\nX-B:\r\n\r\n",
    "obs-text": b"GET /fp/obs HTTP/1.1\r\nHost: ide.test\r\nX-Name: caf\xe9\r\n\r\n",
    "duplicates": b"GET /fp/dup HTTP/1.1\r\nHost: ide.test\r\nX-D: 1\r\nx-d: 2\r\n\r\n",
    "hop-by-hop": (
        b"GET /fp/hop HTTP/1.1\r\nHost: ide.test\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Dumont-Transition: 9\r\n\r\n"
    ),
    "close": b"GET /fp/close HTTP/1.1\r\nHost: ide.test\r\nConnection: close\r\n\r\n",
    "http10": b"GET /fp/10 HTTP/1.0\r\n\r\n",
    "http10-keep-alive": b"GET /fp/10ka HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    "forwarded-untrusted": (
        b"GET /fp/fwd HTTP/1.1\r\nHost: ide.test\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-Host: evil.test\r\nForwarded: for=6.6.6.6\r\n\r\n"
    ),
    "no-host": b"GET /fp/nohost HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "two-hosts": b"GET /fp/2h HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    "space-before-colon": b"GET /fp/sbc HTTP/1.1\r\nHost: ide.test\r\nX-A : 1\r\n\r\n",
    "control-char": b"GET /fp/ctl HTTP/1.1\r\nHost: ide.test\r\nX-A: a\x01b\r\n\r\n",
    "fragment": b"GET /fp/frag#x HTTP/1.1\r\nHost: ide.test\r\n\r\n",
    "trace": b"TRACE /fp/trace HTTP/1.1\r\nHost: ide.test\r\n\r\n",
    "bare-lf": b"GET /fp/lf HTTP/1.1\nHost: ide.test\n\n",
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_a_request_read_whole_or_a_byte_at_a_time_is_the_same_request(
    proxy: Proc, upstream: RecordingUpstream, name: str
) -> None:
    data = REQUESTS[name]
    replies, heads = [], []
    for whole in (True, False):
        before = len(upstream.heads)
        replies.append(_trip(proxy.port, data, whole))
        # Only this test's requests: a backend that flaps under load gets a warm-up GET / too.
        ours = [h for h in upstream.heads[before:] if b" /fp/" in h.split(b"\n", 1)[0]]
        heads.append(ours[:1])
    assert replies[0] == replies[1], name
    assert heads[0] == heads[1], name
    if status_of(replies[0]) == 200:
        [forwarded] = heads[0]
        assert b"x-secret" not in forwarded.lower()
        assert b"x-dumont" not in forwarded.lower()
        assert b"6.6.6.6" not in forwarded


ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "empty-length": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "no-content": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "not-modified": b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    "hop-by-hop": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: p\r\n"
        b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
    ),
    "closing": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
    "cookies": (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-V: \t tab \t\r\n"
        b"X-O: caf\xe9\r\nContent-Length: 1\r\n\r\n!"
    ),
    "empty-reason": b"HTTP/1.1 404 \r\nContent-Length: 4\r\n\r\nnope",
    "custom-reason": b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 3\r\n\r\ntea",
    "server-error": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
    "control-char": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 1\r\n\r\n!",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 1\r\n\r\n!",
    "hsts-kept": (
        b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 1\r\n\r\n!"
    ),
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_an_answer_read_whole_or_a_byte_at_a_time_reaches_the_browser_the_same(
    proxy: Proc, name: str
) -> None:
    CANNED[f"fp-{name}"] = ANSWERS[name]
    whole = _trip(proxy.port, f"GET /respond/fp-{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), True)
    pieces = _trip(proxy.port, f"GET /slow/fp-{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), True)
    assert whole == pieces, name
    if name in ("two-lengths", "bad-length", "control-char", "space-before-colon"):
        assert status_of(whole) == 502, whole


def test_a_head_answer_has_no_body_on_either_path(proxy: Proc) -> None:
    CANNED["fp-head"] = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
    for path in ("/respond/fp-head", "/slow/fp-head"):
        reply = _trip(proxy.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), True)
        first, _, after = reply.partition(b"|")
        assert status_of(first) == 200
        assert first.endswith(b"\r\n\r\n")
        assert b"content-length: 42" in first.lower()
        assert b"seen /after" in after


def test_a_response_head_past_the_limit_is_a_502_for_that_request_alone(proxy: Proc) -> None:
    huge = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"f" * 200) for i in range(400))  # ~86 KiB
    CANNED["fp-huge"] = b"HTTP/1.1 200 OK\r\n" + huge + b"Content-Length: 1\r\n\r\n!"
    for path in ("/respond/fp-huge", "/slow/fp-huge"):
        reply = _trip(proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), True)
        assert status_of(reply) == 502, reply[:200]
        assert b"seen /after" in reply
