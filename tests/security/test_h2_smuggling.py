# ruff: noqa: RUF005 - the attack table reads best one case to a line, each a list plus fields
"""HTTP/2 -> HTTP/1.1 request smuggling, with raw header lists, against the real data plane.

The client is python-hyper's h2 with its own checks turned off, so it sends exactly the header
list of each case, as an attacker's client would. Every case carries its own marker; the counting
upstream must never see a request with it: each is refused with a 400 on its stream, a stream
reset, or a connection error (GOAWAY) before anything reaches a backend. ``layer`` says which
layer refuses: h2 is python-hyper's state machine, dumont is proxy/dataplane/h2_request.py (which
checks every rule again, so a laxer h2 would not open a hole).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from proxy.server import ProxyServer
from tests.support.h2client import H2Client, tls_settings
from tests.support.proxies import ProxyFactory
from tests.support.rawnet import CountingUpstream

Fields = list[tuple[bytes, bytes]]


def base(marker: str, method: bytes = b"GET", path: bytes | None = None) -> Fields:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"ide.test"),
            (b":path", path if path is not None else b"/h2-" + marker.encode())]  # fmt: skip


# (id, header list, body or None, layer)
CASES: list[tuple[str, Fields, bytes | None, str]] = [
    # CR, LF and colons: in HTTP/1.1 they would split the head and inject a field or a request.
    ("name-crlf", base("name-crlf") + [(b"x-a\r\ntransfer-encoding", b"chunked")], None, "h2"),
    ("name-lf", base("name-lf") + [(b"x-a\nx-b", b"1")], None, "h2"),
    ("name-colon", base("name-colon") + [(b"x-a:b", b"1")], None, "h2"),
    ("value-crlf", base("value-crlf") + [(b"x-a", b"1\r\nTransfer-Encoding: chunked")], None, "h2"),
    ("value-lf", base("value-lf") + [(b"x-a", b"1\nx-b: 2")], None, "h2"),
    ("value-ctl", base("value-ctl") + [(b"x-a", b"1\x01")], None, "dumont"),
    (
        "path-crlf",
        base("path-crlf", path=b"/h2-path-crlf HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled"),
        None,
        "h2",
    ),
    # Connection-specific fields: they mean nothing in HTTP/2 and would frame an HTTP/1.1 body.
    (
        "transfer-encoding",
        base("transfer-encoding", b"POST") + [(b"transfer-encoding", b"chunked")],
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        "h2",
    ),
    ("connection", base("connection") + [(b"connection", b"close")], None, "h2"),
    ("keep-alive", base("keep-alive") + [(b"keep-alive", b"timeout=5")], None, "h2"),
    (
        "proxy-connection",
        base("proxy-connection") + [(b"proxy-connection", b"keep-alive")],
        None,
        "h2",
    ),
    ("upgrade", base("upgrade") + [(b"upgrade", b"websocket")], None, "h2"),
    ("te-gzip", base("te-gzip") + [(b"te", b"gzip")], None, "h2"),
    # Pseudo-headers: repeated, after a regular field, missing, unknown, out of their request.
    ("path-twice", base("path-twice") + [(b":path", b"/smuggled")], None, "h2"),
    ("method-twice", [(b":method", b"GET"), *base("method-twice")], None, "h2"),
    (
        "pseudo-after-regular",
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b"x-a", b"1"),
            (b":authority", b"ide.test"),
            (b":path", b"/h2-pseudo-after-regular"),
        ],
        None,
        "h2",
    ),
    (
        "no-path",
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"ide.test"),
            (b"x-marker", b"/h2-no-path"),
        ],
        None,
        "h2",
    ),
    (
        "no-method",
        [(b":scheme", b"https"), (b":authority", b"ide.test"), (b":path", b"/h2-no-method")],
        None,
        "h2",
    ),
    ("unknown-pseudo", base("unknown-pseudo") + [(b":smuggle", b"1")], None, "h2"),
    (
        "protocol-without-connect",
        base("protocol-without-connect") + [(b":protocol", b"websocket")],
        None,
        "h2",
    ),
    # :path that is not origin-form: the backend would see another target than the one screened.
    (
        "path-absolute",
        base("path-absolute", path=b"http://evil.test/h2-path-absolute"),
        None,
        "dumont",
    ),
    ("path-authority", base("path-authority", path=b"evil.test:443"), None, "dumont"),
    ("path-relative", base("path-relative", path=b"h2-path-relative"), None, "dumont"),
    ("path-fragment", base("path-fragment", path=b"/h2-path-fragment#x"), None, "dumont"),
    ("path-empty", base("path-empty", path=b""), None, "h2"),
    # Uppercase names are malformed in HTTP/2 (RFC 9113 8.2.1).
    ("uppercase-name", base("uppercase-name") + [(b"X-Upper", b"1")], None, "h2"),
    ("uppercase-host", base("uppercase-host") + [(b"Host", b"other.test")], None, "h2"),
    # Host and :authority that disagree: which one routes, which one the backend trusts?
    ("host-mismatch", base("host-mismatch") + [(b"host", b"other.test")], None, "dumont"),
    (
        "host-twice",
        base("host-twice") + [(b"host", b"ide.test"), (b"host", b"ide.test")],
        None,
        "dumont",
    ),
    # content-length that disagrees with the DATA frames.
    (
        "cl-longer-than-data",
        base("cl-longer-than-data", b"POST") + [(b"content-length", b"10")],
        b"12345",
        "h2",
    ),
    (
        "cl-shorter-than-data",
        base("cl-shorter-than-data", b"POST") + [(b"content-length", b"2")],
        b"12345GET /smuggled",
        "h2",
    ),
    (
        "cl-without-data",
        base("cl-without-data", b"POST") + [(b"content-length", b"5")],
        None,
        "dumont",
    ),
    (
        "cl-not-digits",
        base("cl-not-digits", b"POST") + [(b"content-length", b"+5")],
        b"12345",
        "h2",
    ),
    (
        "cl-twice",
        base("cl-twice", b"POST") + [(b"content-length", b"5"), (b"content-length", b"5")],
        b"12345",
        "dumont",
    ),
    # Methods the proxy never forwards, as for HTTP/1.1.
    ("connect", [(b":method", b"CONNECT"), (b":authority", b"evil.test:443")], None, "dumont"),
    ("trace", base("trace", b"TRACE"), None, "dumont"),
]


@pytest.fixture
async def h2_proxy(
    make_proxy: ProxyFactory, upstream: CountingUpstream, certificate: tuple[Path, Path]
) -> ProxyServer:
    return await make_proxy(
        URL(f"http://127.0.0.1:{upstream.port}"),
        URL(f"http://localhost:{upstream.port}"),
        tls=tls_settings(certificate),
    )


def _port(server: ProxyServer) -> int:
    assert server.public is not None
    return server.public.address.port


@pytest.mark.parametrize(
    ("case", "fields", "body", "layer"), CASES, ids=[case[0] for case in CASES]
)
async def test_malformed_request_never_reaches_a_backend(
    h2_proxy: ProxyServer,
    upstream: CountingUpstream,
    case: str,
    fields: Fields,
    body: bytes | None,
    layer: str,
) -> None:
    before = len(upstream.requests())
    client = await H2Client.open(_port(h2_proxy), validate=False)
    try:
        stream_id = client.start(fields, body)
        await client.flush()
        await client.wait_for(
            lambda: client.closed or client.goaway is not None or client.done(stream_id), 10
        )
        reply = client.replies[stream_id]
        refused = (
            reply.status == 400
            or reply.status == 405
            or reply.reset is not None
            or client.goaway is not None
            or client.closed
        )
        assert refused, (case, reply)
        assert reply.status not in (200, 502), reply
        # The same connection (when it survived) still serves a good request: the refusal was
        # this stream's alone.
        if not client.closed and client.goaway is None:
            good = await client.request(base(f"after-{case}"))
            assert good.status == 200
    finally:
        await client.close()
    seen = upstream.requests()[before:]
    assert [s.path for s in seen if s.path.startswith(f"/h2-{case}") and s.complete] == []
    assert [s.path for s in seen if "smuggled" in s.path] == []
    assert all(s.path == f"/h2-after-{case}" for s in seen if s.complete), seen
    del layer  # documentation: which layer refuses (the module docstring)
