"""HTTP/1.1 messages as the data plane holds them, and the heads it writes.

Header names and values stay bytes from the parser to the socket. Reading a request's fields is
one pass that keeps only the few the proxy acts on (``RequestHead.first``); rewriting the heads
for the backend and for the browser is one pass each over the raw list (``backend_request_head``,
``browser_response_head``). They follow proxy.headers' rules exactly (hop-by-hop and
``Connection``-named fields dropped, X-Forwarded-* from trusted front proxies only), which
tests/security/test_properties.py checks against those reference functions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from multidict import CIMultiDict

from proxy.headers import FORWARDED, HOP_BY_HOP, ClientFacts

__all__ = [
    "REFUSAL_HEADERS",
    "REQUEST_FIELDS",
    "RESPONSE_FIELDS",
    "RequestHead",
    "ResponseHead",
    "backend_request_head",
    "browser_response_head",
    "closing_response",
    "connection_tokens",
    "read_fields",
    "serialize_head",
]

# On every answer the proxy writes itself (refusals, errors): nothing to sniff, frame or cache.
REFUSAL_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
_HOP_BY_HOP = frozenset(str(h).lower().encode() for h in HOP_BY_HOP)
# "Expect: 100-continue" is answered by the proxy itself; X-Dumont-* are the proxy's own.
REQUEST_DROP = _HOP_BY_HOP | frozenset(str(h).lower().encode() for h in FORWARDED) | {b"expect"}
RESPONSE_DROP = _HOP_BY_HOP | {b"content-length"}
INTERNAL_PREFIX = b"x-dumont-"
# The response fields the proxy reads.
RESPONSE_FIELDS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"content-type",
        b"connection",
        b"strict-transport-security",
    }
)
# The request fields the proxy reads; the rest pass through untouched and unread.
REQUEST_FIELDS = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"connection",
        b"expect",
        b"sec-fetch-mode",
        b"accept",
        b"user-agent",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    }
)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """The lowercased field names a Connection header lists (they are hop-by-hop too)."""
    if len(values) == 1:
        return _tokens_of(values[0])
    return frozenset(token for value in values for token in _tokens_of(value))


@functools.lru_cache(maxsize=256)
def _tokens_of(value: bytes) -> frozenset[bytes]:
    # Nearly every message says "keep-alive", "close" or "upgrade": remembered, not re-split.
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def read_fields(
    headers: list[tuple[bytes, bytes]], wanted: frozenset[bytes]
) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    """Every name lowercased once, and the values of the ``wanted`` fields."""
    names = [name.lower() for name, _ in headers]
    fields: dict[bytes, list[bytes]] = {}
    for lowered, (_, value) in zip(names, headers, strict=True):
        if lowered in wanted:
            if lowered in fields:
                fields[lowered].append(value)
            else:
                fields[lowered] = [value]
    return names, fields


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str  # as sent: origin-form once screened
    version: str  # "1.0", "1.1" (anything else is refused by screening)
    raw_headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    names: list[bytes] = field(init=False)  # every field's name, lowercase, in order
    fields: dict[bytes, list[bytes]] = field(init=False)  # REQUEST_FIELDS, lowercase names
    _headers: CIMultiDict[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.names, self.fields = read_fields(self.raw_headers, REQUEST_FIELDS)

    def first(self, name: bytes) -> str | None:
        """The first value of a read field (``name`` lowercase), as text."""
        values = self.fields.get(name)
        return values[0].decode("latin-1") if values else None

    def values(self, name: bytes) -> list[str]:
        return [v.decode("latin-1") for v in self.fields.get(name, ())]

    @property
    def headers(self) -> CIMultiDict[str]:
        """Every field, decoded (latin-1: a byte-exact round trip); built only when asked for."""
        if self._headers is None:
            self._headers = CIMultiDict(
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw_headers
            )
        return self._headers

    @property
    def chunked(self) -> bool:
        return b"transfer-encoding" in self.fields

    @property
    def content_length(self) -> int | None:
        values = self.fields.get(b"content-length")
        return int(values[0]) if values else None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    names: list[bytes]  # every field's name, lowercase, in ``headers``' order
    fields: dict[bytes, list[bytes]]  # RESPONSE_FIELDS, lowercase names
    named: frozenset[bytes]  # the fields Connection names (hop-by-hop, like it)
    status_line: bytes  # for the browser: the backend's own words, always as HTTP/1.1

    @property
    def content_length(self) -> int | None:
        values = self.fields.get(b"content-length")
        return int(values[0]) if values else None


def backend_request_head(
    head: RequestHead, first_line: str, client: ClientFacts, extra: Sequence[bytes] = ()
) -> bytes:
    """The head to send a backend: proxy.headers.request_headers' rules, on bytes, plus the
    framing the proxy re-frames the body with; no Expect and no X-Dumont-* field."""
    connection = head.fields.get(b"connection")
    drop = REQUEST_DROP | connection_tokens(connection) if connection else REQUEST_DROP
    lines = [first_line.encode("latin-1")]
    lines += [
        name + b": " + value
        for lowered, (name, value) in zip(head.names, head.raw_headers, strict=True)
        if lowered not in drop and not lowered.startswith(INTERNAL_PREFIX)
    ]
    if client.trusted:
        lines += _field_lines(forwarded_fields(head, client))
    else:
        if client.untrusted_fields is None:
            client.untrusted_fields = _field_lines(forwarded_fields(head, client))
        lines += client.untrusted_fields
    if b"host" not in head.fields:  # HTTP/1.0 may omit it; HTTP/1.1 to the backend needs one
        lines.append(b"Host: localhost")
    if head.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    if extra:
        lines += extra
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _field_lines(fields: list[tuple[bytes, str]]) -> list[bytes]:
    return [name + b": " + value.encode("latin-1") for name, value in fields]


def forwarded_fields(head: RequestHead, client: ClientFacts) -> list[tuple[bytes, str]]:
    """X-Forwarded-* (and Forwarded), as proxy.headers sets them: only a configured front proxy
    may tell who the client is; anyone else could lie."""
    out: list[tuple[bytes, str]] = []
    trusted = client.trusted
    prior_for = head.first(b"x-forwarded-for") if trusted else None
    if client.peer:
        out.append(
            (b"X-Forwarded-For", f"{prior_for}, {client.peer}" if prior_for else client.peer)
        )
    elif prior_for:
        out.append((b"X-Forwarded-For", prior_for))
    proto = head.first(b"x-forwarded-proto") if trusted else None
    out.append((b"X-Forwarded-Proto", proto or client.scheme))
    # code-server checks Forwarded host=, then X-Forwarded-Host, then Host against the Origin:
    # an untrusted X-Forwarded-Host is replaced by the Host itself so all three agree.
    fwd_host = head.first(b"x-forwarded-host") if trusted else None
    if fwd_host or client.host:
        out.append((b"X-Forwarded-Host", fwd_host or client.host or ""))
    if trusted and (forwarded := head.first(b"forwarded")):
        out.append((b"Forwarded", forwarded))
    return out


def browser_response_head(
    status_line: bytes,
    raw_headers: list[tuple[bytes, bytes]],
    extra: list[bytes],
    named: frozenset[bytes],
    names: list[bytes] | None = None,
) -> bytes:
    """The head to send the browser: proxy.headers.response_headers' rules on bytes (hop-by-hop,
    Content-Length and the ``named`` fields of Connection dropped), then ``extra`` lines.
    ``names``: the fields' names lowercased, when the caller has them already."""
    drop = RESPONSE_DROP | named if named else RESPONSE_DROP
    if names is None:
        names = [name.lower() for name, _ in raw_headers]
    lines = [status_line]
    lines += [
        name + b": " + value
        for lowered, (name, value) in zip(names, raw_headers, strict=True)
        if lowered not in drop
    ]
    lines += extra
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def serialize_head(first_line: str, headers: CIMultiDict[str]) -> bytes:
    """A message head. Names and values come from llhttp-checked messages or from the proxy
    itself; a CR or LF in either would split the head, so they are refused here too."""
    lines = [first_line]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name[:40]!r} would break the message head")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def closing_response(
    status: int, reason: str, extra: dict[str, str] | None = None, *, version: str = "1.1"
) -> bytes:
    """A whole plain-text response that ends the connection (refusals, timeouts, limits)."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}: {reason}\n".encode()
    fields = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **REFUSAL_HEADERS,
        **(extra or {}),
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return f"HTTP/{version} {status} {phrase}\r\n{head}\r\n".encode("latin-1") + body
