"""Header rewriting between the browser and a backend, as pure functions returning new headers.

Hop-by-hop headers (RFC 9110 7.6.1) and any header named in ``Connection`` describe one connection
and must not be forwarded. ``Host`` passes unchanged: code-server compares the Origin's host with
the request's (``Forwarded: host=``, then ``X-Forwarded-Host``, then ``Host``) and answers 403 when
they differ, so the browser's Host must reach it as the browser sent it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy
from multidict import istr as IStr

__all__ = [
    "HOP_BY_HOP",
    "ClientFacts",
    "request_headers",
    "response_headers",
]

HOP_BY_HOP = frozenset(
    IStr(h)
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
FORWARDED = frozenset(
    IStr(h) for h in ("Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = CIMultiDictProxy[str] | CIMultiDict[str]


class ClientFacts:
    """What the proxy knows about the connection a request came in on."""

    __slots__ = ("host", "peer", "scheme", "trusted", "untrusted_fields")

    def __init__(self, peer: str | None, scheme: str, host: str | None, trusted: bool) -> None:
        self.peer = peer
        self.scheme = scheme
        self.host = host
        self.trusted = trusted
        # The X-Forwarded-* lines of an untrusted client's requests, which depend on nothing
        # else: the data plane makes them once per connection (proxy.dataplane.messages).
        self.untrusted_fields: list[bytes] | None = None

    @staticmethod
    def is_trusted(peer: str | None, networks: Iterable[IPNetwork]) -> bool:
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in networks)


def _connection_tokens(headers: Headers) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall(hdrs.CONNECTION, ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _without(headers: Headers, drop: frozenset[IStr]) -> CIMultiDict[str]:
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name in drop or (named and name.lower() in named):
            continue
        out.add(name, value)
    return out


def _add_forwarded(out: CIMultiDict[str], incoming: Headers, client: ClientFacts) -> None:
    # Only a configured front proxy may tell us who the client is; anyone else could lie.
    prior_for = incoming.get(hdrs.X_FORWARDED_FOR) if client.trusted else None
    if client.peer:
        out[hdrs.X_FORWARDED_FOR] = f"{prior_for}, {client.peer}" if prior_for else client.peer
    elif prior_for:
        out[hdrs.X_FORWARDED_FOR] = prior_for
    proto = incoming.get(hdrs.X_FORWARDED_PROTO) if client.trusted else None
    out[hdrs.X_FORWARDED_PROTO] = proto or client.scheme
    # code-server checks Forwarded host=, then X-Forwarded-Host, then Host against the Origin:
    # an untrusted X-Forwarded-Host is replaced by the Host itself so all three agree.
    fwd_host = incoming.get(hdrs.X_FORWARDED_HOST) if client.trusted else None
    if fwd_host or client.host:
        out[hdrs.X_FORWARDED_HOST] = fwd_host or client.host or ""
    if client.trusted and (forwarded := incoming.get(hdrs.FORWARDED)):
        out[hdrs.FORWARDED] = forwarded


def request_headers(incoming: Headers, client: ClientFacts) -> CIMultiDict[str]:
    """Headers for the backend: hop-by-hop removed, X-Forwarded-* set, Host unchanged."""
    out = _without(incoming, HOP_BY_HOP | FORWARDED)
    _add_forwarded(out, incoming, client)
    return out


RESPONSE_DROP = HOP_BY_HOP | frozenset({IStr("Content-Length")})


def response_headers(incoming: Headers) -> CIMultiDict[str]:
    """Headers for the browser: hop-by-hop removed. Content-Length is set by the sender."""
    return _without(incoming, RESPONSE_DROP)
