"""Header filtering as pure functions, with property-based tests."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.headers import HOP_BY_HOP, ClientFacts, request_headers, response_headers

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda t: not t.startswith("-")
)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


def facts(trusted: bool = False) -> ClientFacts:
    return ClientFacts("192.0.2.10", "http", "ide.example", trusted)


@given(
    headers=st.lists(st.tuples(TOKEN.map(lambda t: f"x-{t}"), VALUE), max_size=12),
    named=st.lists(TOKEN.map(lambda t: f"x-{t}"), max_size=4),
)
def test_connection_named_and_hop_by_hop_never_pass(
    headers: list[tuple[str, str]], named: list[str]
) -> None:
    incoming = CIMultiDict(headers)
    incoming.add("Connection", ", ".join(["keep-alive", *named]))
    incoming.add("Transfer-Encoding", "chunked")
    incoming.add("Upgrade", "h2c")
    out = request_headers(CIMultiDictProxy(incoming), facts())
    for name in out:
        assert name.lower() not in {n.lower() for n in named}
        assert name not in HOP_BY_HOP
    # Every other end-to-end header passes, with every value, in order.
    kept = [(k.lower(), v) for k, v in headers if k.lower() not in {n.lower() for n in named}]
    passed = [
        (k.lower(), v)
        for k, v in out.items()
        if k.lower().startswith("x-") and not k.lower().startswith("x-forwarded")
    ]
    assert passed == [kv for kv in kept if not kv[0].startswith("x-forwarded")]


@given(st.lists(st.tuples(TOKEN, VALUE), max_size=8))
def test_response_headers_drop_hop_by_hop_and_length(headers: list[tuple[str, str]]) -> None:
    incoming = CIMultiDict(headers)
    incoming.add("Content-Length", "10")
    incoming.add("Keep-Alive", "timeout=5")
    out = response_headers(CIMultiDictProxy(incoming))
    assert "Content-Length" not in out
    assert "Keep-Alive" not in out


def test_host_passes_unchanged() -> None:
    incoming = CIMultiDictProxy(CIMultiDict({"Host": "IDE.example:8443", "Origin": "x"}))
    out = request_headers(incoming, facts())
    assert out["Host"] == "IDE.example:8443"
    assert out["Origin"] == "x"


def test_trust_is_by_network() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    assert ClientFacts.is_trusted("10.1.2.3", nets)
    assert not ClientFacts.is_trusted("192.0.2.1", nets)
    assert not ClientFacts.is_trusted(None, nets)
    assert not ClientFacts.is_trusted("not-an-ip", nets)
