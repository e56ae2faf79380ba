"""An HTTP/2 request's header list, screened and turned into the HTTP/1.1 head a backend gets.

The HTTP/2 -> HTTP/1.1 translation is where request smuggling lives (RFC 9113 8.2 and 8.3 list
the rules; James Kettle's "HTTP/2: the sequel is always worse" the exploits). python-hyper's h2
already refuses much of it as a connection error (uppercase names, CR/LF/NUL, connection-specific
fields, TE other than trailers, pseudo-headers repeated or out of place); this module checks every
rule again on its own, so the proxy's safety does not hang on one library's version, and adds what
h2 leaves to the application: ``:path`` in origin-form, a Content-Length of digits that agrees with
an empty body, a Host that agrees with ``:authority``, control characters in values, and the
methods and target rules of proxy.validation.screen_request (run on the translated head).

Any failure raises ``Rejected`` before a byte reaches a backend.
"""

from __future__ import annotations

import base64
import os

from proxy.validation import BAD_VALUE, TOKEN, Rejected, screen_request

from .messages import RequestHead

__all__ = ["H2Request", "translate_request"]

PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority", b":protocol"})
# RFC 9113 8.2.2: these mean nothing in HTTP/2; in a translation they would frame a smuggled body.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class H2Request:
    """A screened request: the HTTP/1.1 head for the backend, and whether it opens a WebSocket
    (RFC 8441 extended CONNECT, translated to an HTTP/1.1 upgrade GET)."""

    __slots__ = ("head", "websocket")

    def __init__(self, head: RequestHead, websocket: bool) -> None:
        self.head = head
        self.websocket = websocket


def _is_lower_token(name: bytes) -> bool:
    return TOKEN.fullmatch(name) is not None and name == name.lower()


def _split(
    headers: list[tuple[bytes, bytes]],
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if BAD_VALUE.search(value):
            raise Rejected(400, f"control character in {name[:40]!r}")
        if name.startswith(b":"):
            if regular:
                raise Rejected(400, "a pseudo-header after a regular field")
            if name not in PSEUDO:
                raise Rejected(400, f"unknown pseudo-header {name[:40]!r}")
            if name in pseudo:
                raise Rejected(400, f"repeated pseudo-header {name!r}")
            pseudo[name] = value
            continue
        if not _is_lower_token(name):
            raise Rejected(400, f"invalid header name {name[:40]!r}")
        if name in CONNECTION_SPECIFIC:
            raise Rejected(400, f"connection-specific field {name.decode()!r} in HTTP/2")
        if name == b"te" and value.strip().lower() != b"trailers":
            raise Rejected(400, "TE other than trailers in HTTP/2")
        regular.append((name, value))
    return pseudo, regular


def _host(pseudo: dict[bytes, bytes], regular: list[tuple[bytes, bytes]]) -> bytes:
    """The one Host: ``:authority``, which a Host field may repeat but not contradict."""
    hosts = [value for name, value in regular if name == b"host"]
    authority = pseudo.get(b":authority")
    if len(hosts) > 1 or (hosts and authority is not None and hosts[0] != authority):
        raise Rejected(400, "Host disagrees with :authority")
    host = authority if authority is not None else (hosts[0] if hosts else b"")
    if not host or b"@" in host:
        raise Rejected(400, "no usable :authority")
    return host


def _length(regular: list[tuple[bytes, bytes]], end_stream: bool) -> bytes | None:
    lengths = [value for name, value in regular if name == b"content-length"]
    if not lengths:
        return None
    if len(lengths) > 1 or not lengths[0].isdigit():
        raise Rejected(400, "ambiguous content-length")
    if end_stream and int(lengths[0]) != 0:
        raise Rejected(400, "content-length disagrees with the DATA frames")
    return lengths[0]


def translate_request(
    headers: list[tuple[bytes, bytes]], end_stream: bool, max_url_length: int
) -> H2Request:
    """The screened request, or ``Rejected``; ``end_stream``: the HEADERS ended the stream."""
    pseudo, regular = _split(headers)
    method = pseudo.get(b":method")
    path = pseudo.get(b":path")
    scheme = pseudo.get(b":scheme")
    if method is None:
        raise Rejected(400, "no :method")
    websocket = False
    if method == b"CONNECT":
        if pseudo.get(b":protocol") != b"websocket":
            raise Rejected(405, "CONNECT is not served: this is not an open proxy")
        if end_stream:
            raise Rejected(400, "a WebSocket stream that ends at once")
        websocket = True
    elif b":protocol" in pseudo:
        raise Rejected(400, ":protocol outside an extended CONNECT")
    if scheme not in (b"https", b"http") or path is None:
        raise Rejected(400, "missing or unusable :scheme or :path")
    # Origin-form only (RFC 9113 8.3.1): an absolute or authority-form :path would reach the
    # backend as a different target than the one screened.
    if not (path.startswith(b"/") or (path == b"*" and method == b"OPTIONS")) or b"#" in path:
        raise Rejected(400, ":path is not origin-form")
    host = _host(pseudo, regular)
    length = _length(regular, end_stream)
    # RFC 9113 8.2.3: cookie crumbs are joined with "; " for HTTP/1.1.
    cookies = [value for name, value in regular if name == b"cookie"]
    raw = [(b"host", host)]
    raw += [(n, v) for n, v in regular if n not in (b"host", b"cookie")]
    if cookies:
        raw.append((b"cookie", b"; ".join(cookies)))
    if websocket:
        if length is not None:
            raise Rejected(400, "a WebSocket stream may not carry a content-length")
        # The backend speaks HTTP/1.1's handshake: it needs the key an HTTP/2 client never sends
        # (RFC 8441 5). The proxy makes one; the backend's Accept is for the proxy alone.
        key = base64.b64encode(os.urandom(16))
        raw += [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
        raw.append((b"sec-websocket-key", key))
        method_text = "GET"
    else:
        if not end_stream and length is None:
            raw.append((b"transfer-encoding", b"chunked"))  # a body of unknown length
        method_text = method.decode("ascii", "replace")
    if not method_text.isalpha() or not method_text.isupper():
        raise Rejected(400, "invalid :method")
    head = RequestHead(method_text, path.decode("latin-1"), "1.1", raw, True)
    screen_request(head, max_url_length)  # methods, target length, framing: as for HTTP/1.1
    return H2Request(head, websocket)
