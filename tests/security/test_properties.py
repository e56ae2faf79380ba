"""Property-based tests (hypothesis): header filtering, framing checks, the watcher injector."""

from __future__ import annotations

import gzip
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.dataplane.messages import serialize_head
from proxy.headers import HOP_BY_HOP, ClientFacts, request_headers, response_headers
from proxy.pages.inject import WATCHER_TAG, inject_watcher
from proxy.validation import Rejected, check_framing, screen_response

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~"
NAMES = st.one_of(
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12),
    st.sampled_from([str(h) for h in HOP_BY_HOP] + ["Host", "X-Forwarded-For", "Forwarded"]),
)
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=16)


def facts(trusted: bool) -> ClientFacts:
    return ClientFacts("192.0.2.7", "https", "ide.test", trusted)


@given(HEADERS, st.lists(st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=8), max_size=4))
def test_request_headers_never_forward_hop_by_hop_or_untrusted_forwarding(
    headers: list[tuple[str, str]], named: list[str]
) -> None:
    incoming = CIMultiDict(headers)
    if named:
        incoming.add("Connection", ", ".join(named))
    out = request_headers(CIMultiDictProxy(incoming), facts(trusted=False))
    lowered = {n.lower() for n in named}
    for name in out:
        assert name not in HOP_BY_HOP
        assert name.lower() not in lowered
    # An untrusted client cannot choose who it is said to be, nor the scheme.
    assert out.getall("X-Forwarded-For") == ["192.0.2.7"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert "Forwarded" not in out
    # Whatever is forwarded, the data plane writes as one head without a header injection.
    head = serialize_head("GET / HTTP/1.1", out)
    assert head.count(b"\r\n\r\n") == 1
    assert head.endswith(b"\r\n\r\n")


@given(HEADERS)
def test_response_headers_drop_framing_and_hop_by_hop(headers: list[tuple[str, str]]) -> None:
    out = response_headers(CIMultiDictProxy(CIMultiDict(headers)))
    assert "Content-Length" not in out
    assert all(name not in HOP_BY_HOP for name in out)
    kept = [(k.lower(), v) for k, v in headers if k not in HOP_BY_HOP and k.lower() != "connection"]
    if not any(k.lower() == "connection" for k, _ in headers):
        assert [(k.lower(), v) for k, v in out.items()] == [
            kv for kv in kept if kv[0] != "content-length"
        ]


LENGTHS = st.one_of(
    st.from_regex(r"\A[0-9]{1,6}\Z"), st.sampled_from(["", "+1", "-1", "1,1", "0x1"])
)
CODINGS = st.sampled_from(["chunked", "Chunked", " chunked ", "gzip", "gzip, chunked", "identity"])


@given(st.lists(LENGTHS, max_size=3), st.lists(CODINGS, max_size=2), st.booleans())
def test_framing_is_accepted_only_when_unambiguous(
    lengths: list[str], codings: list[str], http10: bool
) -> None:
    headers = CIMultiDict([("Content-Length", v) for v in lengths])
    for coding in codings:
        headers.add("Transfer-Encoding", coding)
    try:
        check_framing(CIMultiDictProxy(headers), http10)
        accepted = True
    except Rejected:
        accepted = False
    one_length = len(lengths) <= 1 and all(v.strip().isdigit() for v in lengths)
    chunked = len(codings) == 1 and codings[0].strip().lower() == "chunked"
    expected = one_length and (not codings or (chunked and not lengths and not http10))
    assert accepted == expected


RAW = st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.binary(max_size=16)), max_size=8)


@given(st.integers(100, 599), RAW)
def test_accepted_responses_are_writable_and_unambiguous(
    status: int, raw: list[tuple[bytes, bytes]]
) -> None:
    problem = screen_response(status, "OK", raw)
    if problem is not None:
        return
    assert status >= 200
    headers = CIMultiDict(
        (n.decode("latin-1"), v.decode("latin-1"))
        for n, v in raw  # as the data plane reads
    )
    for name, value in raw:
        assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name)
        assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value)
    assert len(headers.getall("Content-Length", [])) <= 1
    assert not ("Content-Length" in headers and "Transfer-Encoding" in headers)
    head = serialize_head("HTTP/1.1 200 OK", response_headers(CIMultiDictProxy(headers)))
    assert head.count(b"\r\n\r\n") == 1


PIECES = ["<head>", "</head>", "<body>", "<script>", "</script>", "<!--", "-->", "<html>", "a"]
HTML = st.lists(st.sampled_from([*PIECES, " ", "\n", "<", ">", "/"]), max_size=30).map(
    lambda parts: "<!doctype html>" + "".join(parts)
)


@settings(max_examples=300)
@given(HTML, st.booleans())
def test_injector_adds_exactly_one_tag_and_nothing_else(document: str, compress: bool) -> None:
    body = document.encode()
    headers = {"Content-Type": "text/html; charset=utf-8"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    result = inject_watcher(200, "GET", headers, body)
    if result is None:  # it refuses only a document that already carries the tag
        assert WATCHER_TAG in document.encode()
        return
    new_headers, new_body = result
    assert new_headers["Content-Length"] == str(len(new_body))
    plain = gzip.decompress(new_body) if compress else new_body
    assert plain.count(WATCHER_TAG) == document.encode().count(WATCHER_TAG) + 1
    assert plain.replace(WATCHER_TAG, b"", 1) == document.encode()
    # Injecting twice changes nothing: the second pass sees the tag and returns None.
    assert inject_watcher(200, "GET", dict(new_headers), new_body) is None


def _parsed_fields(head: bytes) -> list[tuple[str, str]]:
    fields = [line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if line]
    return [(name, value) for name, value in fields]


@given(HEADERS, st.booleans(), st.lists(st.sampled_from(["x-a", "keep-alive", "te"]), max_size=2))
def test_data_plane_heads_follow_the_reference_rules(
    headers: list[tuple[str, str]], trusted: bool, named: list[str]
) -> None:
    """The data plane's one-pass byte heads equal proxy.headers' reference functions."""
    from hypothesis import assume

    from proxy.dataplane.messages import (
        RequestHead,
        backend_request_head,
        browser_response_head,
        connection_tokens,
    )

    assume(all(n.lower() not in ("expect", "content-length") for n, _ in headers))
    assume(all(not n.lower().startswith("x-dumont-") for n, _ in headers))
    headers = [("Host", "ide.test"), *headers]
    if named:
        headers.append(("Connection", ", ".join(named)))
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    head = RequestHead("GET", "/", "1.1", raw, True)
    ours = _parsed_fields(backend_request_head(head, "GET / HTTP/1.1", facts(trusted)))
    reference = request_headers(CIMultiDictProxy(CIMultiDict(headers)), facts(trusted))
    if "Transfer-Encoding" in CIMultiDict(headers):
        reference["Transfer-Encoding"] = "chunked"  # the data plane re-frames a chunked body
    assert ours == list(reference.items())
    named_fields = connection_tokens(head.fields.get(b"connection", []))
    ours = _parsed_fields(browser_response_head(b"HTTP/1.1 200 OK", raw, [], named_fields))
    assert ours == list(response_headers(CIMultiDictProxy(CIMultiDict(headers))).items())
