"""What the proxy refuses to pass on, in either direction, beyond what llhttp rejects.

llhttp (httptools, the parser of the data plane on both sides) already refuses most ambiguous
requests: both
Content-Length and Transfer-Encoding, a duplicate or malformed Content-Length, obs-folded lines,
control characters, bad chunk sizes (docs/SECURITY.md has the whole table). These pure functions
refuse what it lets through and a proxy must not forward: an HTTP/1.0 message with
Transfer-Encoding (RFC 9112 6.1), a coding other than exactly ``chunked``, a WebSocket upgrade that
is not a bodiless GET (CVE-2026-69243 smuggled requests in such a body), absolute-form targets for
other hosts, CONNECT and TRACE. Responses get the same rules (``screen_response``) before any of
a backend's answer reaches the browser: llhttp parses responses more leniently than requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from .dataplane.messages import RequestHead
from .errors import UpstreamError

__all__ = [
    "Rejected",
    "refuse_bad_upgrade_answer",
    "screen_request",
    "screen_response",
    "screen_response_head",
]

# RFC 9110 5.1: a field name is a token; 5.5: no CTL in a value except HTAB.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TOKEN_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+\n)*")
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
BAD_REASON = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
DIGITS = re.compile(r"[0-9]+")
REFUSED_METHODS = frozenset({hdrs.METH_CONNECT, hdrs.METH_TRACE})


class Rejected(Exception):
    """A message the proxy will not pass on; ``status`` is what the client is told."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def check_framing(headers: CIMultiDictProxy[str] | CIMultiDict[str], http10: bool) -> None:
    """One unambiguous body length: a single Content-Length, or exactly ``chunked``."""
    lengths = headers.getall(hdrs.CONTENT_LENGTH, [])
    codings = headers.getall(hdrs.TRANSFER_ENCODING, [])
    _check_lengths(lengths, codings, http10)


def _check_lengths(lengths: list[str], codings: list[str], http10: bool) -> None:
    if len(lengths) > 1 or any(not DIGITS.fullmatch(v.strip()) for v in lengths):
        raise Rejected(400, "ambiguous Content-Length")
    if not codings:
        return
    if lengths:
        raise Rejected(400, "both Content-Length and Transfer-Encoding")
    if http10:
        raise Rejected(400, "Transfer-Encoding in an HTTP/1.0 message")
    # The proxy re-frames every body and drops hop-by-hop headers: any other coding (gzip,
    # chunked) would be lost on the way, and a list is where parsers have disagreed.
    if len(codings) > 1 or _tokens(codings[0]) != ["chunked"]:
        raise Rejected(400, f"unsupported Transfer-Encoding {', '.join(codings)[:60]!r}")


def check_fields(raw_headers: list[tuple[bytes, bytes]]) -> None:
    """Token names and CTL-free values (defence in depth: llhttp's strict mode checks too)."""
    # Two regex calls for the whole head; the field is named only when one fails.
    names = b"".join([name + b"\n" for name, _ in raw_headers])
    values = b"\t".join([value for _, value in raw_headers])
    if TOKEN_LINES.fullmatch(names) and not BAD_VALUE.search(values):
        return
    for name, value in raw_headers:
        if not TOKEN.fullmatch(name):
            raise Rejected(400, f"invalid header name {name[:40]!r}")
        if BAD_VALUE.search(value):
            raise Rejected(400, f"control character in header {name[:40]!r}")


def is_websocket_upgrade(head: RequestHead) -> bool:
    """A screened request asking for a WebSocket (screening refuses any other shape of it)."""
    return (
        b"upgrade" in head.fields and head.method == "GET" and "websocket" in _upgrade_tokens(head)
    )


def _upgrade_tokens(head: RequestHead) -> list[str]:
    return [t for v in head.values(b"upgrade") for t in _tokens(v)]


def _check_upgrade(head: RequestHead) -> None:
    offered = _upgrade_tokens(head)
    if "websocket" not in offered:
        return  # any other Upgrade (h2c) is dropped as hop-by-hop and served as HTTP/1.1
    if offered != ["websocket"]:
        raise Rejected(400, "Upgrade offers websocket among other protocols")
    if head.method != hdrs.METH_GET or head.version != "1.1":
        raise Rejected(400, "a WebSocket upgrade must be an HTTP/1.1 GET")
    length = (head.first(b"content-length") or "0").strip()
    if head.chunked or length != "0":
        raise Rejected(400, "a WebSocket upgrade may not carry a body")


def _origin_form(head: RequestHead) -> None:
    """Absolute-form is accepted for this host only (RFC 9112 3.2.2) and made origin-form."""
    target = head.target
    if target.startswith("/") or target == "*":
        if "#" in target:
            raise Rejected(400, "a request target has no fragment")
        return
    try:
        url = urlsplit(target)
    except ValueError:
        raise Rejected(400, "unreadable absolute-form target") from None
    host = head.first(b"host") or ""
    if url.scheme not in ("http", "https") or url.netloc.lower() != host.lower():
        raise Rejected(400, "absolute-form target for another host: this is not an open proxy")
    if url.fragment or "#" in target:
        raise Rejected(400, "a request target has no fragment")
    head.target = (url.path or "/") + (f"?{url.query}" if url.query else "")


def screen_request(head: RequestHead, max_url_length: int) -> None:
    """Raise ``Rejected`` for a request the proxy will not pass on; absolute-form targets for
    this host are made origin-form in place."""
    if head.version not in ("1.0", "1.1"):
        raise Rejected(505, f"HTTP/{head.version} not served")
    if head.method in REFUSED_METHODS:
        raise Rejected(405, f"{head.method} is not served: this is not an open proxy")
    if len(head.target) > max_url_length:
        raise Rejected(414, f"request target longer than {max_url_length} bytes")
    # Names and values: llhttp refused every bad one already (tests/security/test_layers.py).
    hosts = head.fields.get(b"host", [])
    if len(hosts) > 1 or (not hosts and head.version == "1.1"):
        raise Rejected(400, "an HTTP/1.1 request needs exactly one Host")  # RFC 9112 3.2
    fields = head.fields
    if b"content-length" in fields or b"transfer-encoding" in fields:
        http10 = head.version == "1.0"
        _check_lengths(head.values(b"content-length"), head.values(b"transfer-encoding"), http10)
    if b"upgrade" in fields:
        _check_upgrade(head)
    _origin_form(head)


def screen_response(
    status: int, reason: str | None, raw_headers: list[tuple[bytes, bytes]]
) -> str | None:
    """Why a backend's response head must not reach the browser, or None when it may."""
    try:
        check_fields(raw_headers)
    except Rejected as exc:
        return exc.reason
    lengths = [v for n, v in raw_headers if n.lower() == b"content-length"]
    codings = [v for n, v in raw_headers if n.lower() == b"transfer-encoding"]
    return screen_response_head(status, reason, lengths, codings)


def screen_response_head(
    status: int, reason: str | None, lengths: list[bytes], codings: list[bytes]
) -> str | None:
    """screen_response for a head llhttp parsed: it already refused bad names and values
    (tests/security/test_layers.py pins that), so only the status line and framing are left."""
    if status < 200:
        return f"informational status {status} as a final response"
    if reason and BAD_REASON.search(reason):
        return "control character in the status line"
    if not codings and (not lengths or (len(lengths) == 1 and lengths[0].isdigit())):
        return None  # the common case, decided without decoding anything
    try:
        _check_response_framing(
            [v.decode("latin-1") for v in lengths], [v.decode("latin-1") for v in codings]
        )
    except Rejected as exc:
        return exc.reason
    return None


def _check_response_framing(lengths: list[str], codings: list[str]) -> None:
    if len(lengths) > 1 or any(not DIGITS.fullmatch(v.strip()) for v in lengths):
        raise Rejected(502, "ambiguous Content-Length")
    if codings and lengths:
        raise Rejected(502, "both Content-Length and Transfer-Encoding")
    if codings and (len(codings) > 1 or _tokens(codings[0]) != ["chunked"]):
        raise Rejected(502, f"unsupported Transfer-Encoding {', '.join(codings)[:60]!r}")


def refuse_bad_upgrade_answer(status: int, reason: str, headers: Mapping[str, str]) -> None:
    """The backend's answer to a WebSocket handshake, before the browser sees any of it."""
    if status != 101:
        return  # relayed as an ordinary refusal (401, 403), with a body the proxy writes
    raw = [(k.encode("latin-1", "replace"), v.encode("utf-8", "surrogateescape"))
           for k, v in headers.items()]  # fmt: skip
    try:
        if BAD_REASON.search(reason):
            raise Rejected(502, "control character in the status line")
        check_fields(raw)
        if hdrs.CONTENT_LENGTH in headers or hdrs.TRANSFER_ENCODING in headers:
            raise Rejected(502, "a body framing header in a 101 answer")
    except Rejected as exc:
        raise UpstreamError(f"backend's WebSocket answer refused: {exc.reason}") from None
