# ruff: noqa: E501 - the attack table reads best one case to a line
"""Request smuggling and ambiguous framing, byte for byte, against the real proxy process.

Every case carries its own path marker and, where a body could hide one, a smuggled
``GET /smuggled``. The counting upstream must never see ``/smuggled`` and never more requests for
a case than the client sent as one; a refused case must reach it not at all. ``layer`` records
which layer refuses (docs/SECURITY.md has the same table): llhttp is the C parser (httptools) the
data plane parses with; dumont is proxy/validation.py and proxy/dataplane/connection.py.
"""

from __future__ import annotations

import pytest

from tests.support.processes import Proc
from tests.support.rawnet import CountingUpstream, exchange, get, status_of

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: ide.test\r\n\r\n"
CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED
WS_HEAD = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


def req(
    marker: str,
    headers: bytes = b"",
    body: bytes = b"",
    method: bytes = b"POST",
    version: bytes = b"1.1",
) -> bytes:
    head = b"%s /c-%s HTTP/%s\r\nHost: ide.test\r\n" % (method, marker.encode(), version)
    return head + headers + b"\r\n" + body


# (id, request, expected status, layer that refuses)
CASES: list[tuple[str, bytes, int, str]] = [
    # Content-Length and Transfer-Encoding together, in both orders (CL.TE / TE.CL).
    ("cl-te", req("cl-te", b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    ("te-cl", req("te-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    # Duplicate or malformed Content-Length.
    ("cl-dup-same", req("cl-dup-same", b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello" + SMUGGLED), 400, "llhttp"),
    ("cl-dup-diff", req("cl-dup-diff", b"Content-Length: 5\r\nContent-Length: 45\r\n", b"hello" + SMUGGLED), 400, "llhttp"),
    ("cl-list", req("cl-list", b"Content-Length: 5, 5\r\n", b"hello" + SMUGGLED), 400, "llhttp"),
    ("cl-plus", req("cl-plus", b"Content-Length: +5\r\n", b"hello"), 400, "llhttp"),
    ("cl-negative", req("cl-negative", b"Content-Length: -1\r\n", b"hello"), 400, "llhttp"),
    ("cl-hex", req("cl-hex", b"Content-Length: 0x5\r\n", b"hello"), 400, "llhttp"),
    ("cl-inner-space", req("cl-inner-space", b"Content-Length: 1 5\r\n", b"hello"), 400, "llhttp"),
    ("cl-overflow", req("cl-overflow", b"Content-Length: 99999999999999999999999\r\n", b"x"), 400, "llhttp"),
    # Transfer-Encoding other than exactly "chunked".
    ("te-gzip", req("te-gzip", b"Transfer-Encoding: gzip\r\n", SMUGGLED), 400, "llhttp"),
    ("te-chunked-gzip", req("te-chunked-gzip", b"Transfer-Encoding: chunked, gzip\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    ("te-gzip-chunked", req("te-gzip-chunked", b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_SMUGGLE), 400, "dumont"),
    ("te-twice", req("te-twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    ("te-identity", req("te-identity", b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", b"hello"), 400, "llhttp"),
    ("te-xchunked", req("te-xchunked", b"Transfer-Encoding: xchunked\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    ("te-space-before-colon", req("te-space-before-colon", b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"hello"), 400, "llhttp"),
    # (llhttp refuses bytes after an HTTP/1.0 message, so nothing can be smuggled behind it.)
    ("te-http10", req("te-http10", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", version=b"1.0"), 400, "dumont"),
    # obs-fold, control characters, bare CR/LF.
    ("obs-fold", req("obs-fold", b"X-A: 1\r\n 2\r\n", method=b"GET"), 400, "llhttp"),
    ("obs-fold-te", req("obs-fold-te", b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"hello"), 400, "llhttp"),
    ("ctl-in-value", req("ctl-in-value", b"X-A: a\x01b\r\n", method=b"GET"), 400, "llhttp"),
    ("nul-in-value", req("nul-in-value", b"X-A: a\x00b\r\n", method=b"GET"), 400, "llhttp"),
    ("del-in-value", req("del-in-value", b"X-A: a\x7fb\r\n", method=b"GET"), 400, "llhttp"),
    ("cr-in-value", req("cr-in-value", b"X-A: a\rb\r\n", method=b"GET"), 400, "llhttp"),
    ("lf-in-value", req("lf-in-value", b"X-A: a\nTransfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE), 400, "llhttp"),
    ("ctl-in-name", req("ctl-in-name", b"X\x01A: 1\r\n", method=b"GET"), 400, "llhttp"),
    ("space-in-name", req("space-in-name", b"X A: 1\r\n", method=b"GET"), 400, "llhttp"),
    ("bare-lf-lines", b"GET /c-bare-lf-lines HTTP/1.1\nHost: ide.test\n\n", 400, "llhttp"),
    # Chunk sizes and extensions.
    ("chunk-size-bad", req("chunk-size-bad", b"Transfer-Encoding: chunked\r\n", b"zz\r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-size-overflow", req("chunk-size-overflow", b"Transfer-Encoding: chunked\r\n", b"1" + b"0" * 16 + b"\r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-size-0x", req("chunk-size-0x", b"Transfer-Encoding: chunked\r\n", b"0x1\r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-size-space", req("chunk-size-space", b"Transfer-Encoding: chunked\r\n", b"1 \r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-size-negative", req("chunk-size-negative", b"Transfer-Encoding: chunked\r\n", b"-1\r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-ext-bare-lf", req("chunk-ext-bare-lf", b"Transfer-Encoding: chunked\r\n", b"1;a\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-ext-ctl", req("chunk-ext-ctl", b"Transfer-Encoding: chunked\r\n", b"1;a=\x01\r\nx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-data-overrun", req("chunk-data-overrun", b"Transfer-Encoding: chunked\r\n", b"1\r\nxx\r\n" + CHUNKED_SMUGGLE), 400, "llhttp"),
    ("chunk-bare-lf", req("chunk-bare-lf", b"Transfer-Encoding: chunked\r\n", b"1\nx\n0\n\n" + SMUGGLED), 400, "llhttp"),
    ("trailer-content-length", req("trailer-content-length", b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n0\r\nContent-Length: 50\r\n\r\n" + SMUGGLED), 400, "llhttp"),
    # Upgrades: only a bodiless WebSocket GET is an upgrade (CVE-2026-69243).
    ("ws-with-body", req("ws-with-body", WS_HEAD + b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED, method=b"GET"), 400, "dumont"),
    ("ws-chunked-body", req("ws-chunked-body", WS_HEAD + b"Transfer-Encoding: chunked\r\n", CHUNKED_SMUGGLE, method=b"GET"), 400, "dumont"),
    ("ws-post", req("ws-post", WS_HEAD + b"Content-Length: 0\r\n"), 400, "dumont"),
    ("ws-and-h2c", req("ws-and-h2c", b"Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n", method=b"GET"), 400, "dumont"),
    # Not an open proxy.
    ("absolute-other-host", b"GET http://evil.test/c-absolute-other-host HTTP/1.1\r\nHost: ide.test\r\n\r\n", 400, "dumont"),
    ("connect", b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n" + SMUGGLED, 405, "dumont"),
    ("trace", req("trace", method=b"TRACE"), 405, "dumont"),
    # Request line and version.
    ("http09", b"GET /c-http09\r\n\r\n", 505, "dumont"),
    ("http12", req("http12", method=b"GET", version=b"1.2"), 400, "llhttp"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "llhttp"),
    ("fragment", b"GET /c-fragment#x HTTP/1.1\r\nHost: ide.test\r\n\r\n", 400, "dumont"),
    ("no-host", b"GET /c-no-host HTTP/1.1\r\n\r\n", 400, "dumont"),
    ("two-hosts", req("two-hosts", b"Host: evil.test\r\n", method=b"GET"), 400, "dumont"),
    ("space-in-target", b"GET /c-space in HTTP/1.1\r\nHost: ide.test\r\n\r\n", 400, "llhttp"),
    ("lowercase-method", b"get /c-lowercase-method HTTP/1.1\r\nHost: ide.test\r\n\r\n", 400, "llhttp"),
    # Limits.
    ("long-target", b"GET /c-long-target" + b"a" * 9000 + b" HTTP/1.1\r\nHost: ide.test\r\n\r\n", 414, "dumont"),
    ("long-header", req("long-header", b"X-A: " + b"a" * 9000 + b"\r\n", method=b"GET"), 431, "dumont"),
    ("long-header-name", req("long-header-name", b"X-" + b"a" * 9000 + b": 1\r\n", method=b"GET"), 431, "dumont"),
    ("header-flood", req("header-flood", b"".join(b"X-%d: 1\r\n" % i for i in range(1000)), method=b"GET"), 431, "dumont"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "expected", "layer"), CASES, ids=[c[0] for c in CASES])
def test_refused_and_closed(
    proxy: Proc, upstream: CountingUpstream, name: str, data: bytes, expected: int, layer: str
) -> None:
    reply = exchange(proxy.port, data)
    assert status_of(reply) == expected, reply[:300]
    assert not reply.endswith(b"<open>"), "the connection must be closed after a refusal"
    assert b"X-Content-Type-Options: nosniff" in reply
    assert upstream.requests(f"/c-{name}") == []
    assert upstream.requests("/smuggled") == []


# Accepted, but made unambiguous: the upstream sees exactly one plain request.
def test_h2c_upgrade_is_served_as_plain_http(proxy: Proc, upstream: CountingUpstream) -> None:
    data = req(
        "h2c",
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQ\r\n"
        b"Connection: close\r\n",
        method=b"GET",
    )
    reply = exchange(proxy.port, data)
    assert status_of(reply) == 200, reply[:300]
    [seen] = upstream.requests("/c-h2c")
    names = {k.lower() for k, _ in seen.headers}
    assert {"upgrade", "http2-settings"}.isdisjoint(names)


def test_absolute_form_for_this_host_becomes_origin_form(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    data = b"GET http://ide.test/c-absolute-same?q=1 HTTP/1.1\r\nHost: ide.test\r\nConnection: close\r\n\r\n"
    assert status_of(exchange(proxy.port, data)) == 200
    [seen] = upstream.requests("/c-absolute-same")
    assert seen.path == "/c-absolute-same?q=1"


def test_chunked_body_is_reframed_without_extensions_or_trailers(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    body = b'3;ext="a b"\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n'
    data = req("reframed", b"Transfer-Encoding: chunked\r\nConnection: close\r\n", body)
    assert status_of(exchange(proxy.port, data)) == 200
    [seen] = upstream.requests("/c-reframed")
    assert seen.body == b"abcde"
    assert seen.complete


def test_pipelined_requests_are_each_forwarded_once(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    one = req("pipe1", b"Content-Length: 5\r\n", b"hello")
    two = req("pipe2", b"Connection: close\r\n", method=b"GET")
    reply = exchange(proxy.port, one + two)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert len(upstream.requests("/c-pipe")) == 2


def test_huge_but_valid_chunk_size_streams_one_request(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    # 2**64-1 fits llhttp's counter: the proxy streams what arrives, then the body stalls (408).
    data = req("huge-chunk", b"Transfer-Encoding: chunked\r\n", b"F" * 16 + b"\r\n" + SMUGGLED)
    reply = exchange(proxy.port, data, timeout=8)
    assert status_of(reply) == 408, reply[:200]
    assert len(upstream.requests("/c-huge-chunk")) <= 1
    assert upstream.requests("/smuggled") == []


def test_everyone_else_is_still_served(proxy: Proc, upstream: CountingUpstream) -> None:
    assert status_of(get(proxy.port, "/c-after-the-attacks")) == 200
    assert upstream.garbage == []
    assert upstream.requests("/smuggled") == []
