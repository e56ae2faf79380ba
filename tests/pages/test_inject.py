"""The watcher injector: one tag, in the right place, in every encoding code-server uses, with the
framing headers fixed and nothing else touched."""

from __future__ import annotations

import gzip
import zlib

import brotli  # type: ignore[import-untyped]  # brotli ships no type information
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.pages.inject import MAX_DOCUMENT_BYTES, WATCHER_TAG, inject_watcher, wants_watcher

WORKBENCH = (
    b"<!-- Copyright (C) Microsoft Corporation. -->\n<!DOCTYPE html>\n<html>\n\t<head>\n"
    b'\t\t<script nonce="abc">\n\t\t\tperformance.mark("code/didStartRenderer");\n\t\t</script>\n'
    b'\t\t<meta charset="utf-8" />\n\t</head>\n\t<body aria-label="">\n\t</body>\n'
    b'\t<script type="module" src="./static/out/vs/code/browser/workbench/workbench.js"></script>\n'
    b"</html>\n"
)


def encode(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "raw-deflate":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(body) + compressor.flush()
    if encoding == "br":
        return bytes(brotli.compress(body))
    return body


def decode(encoding: str | None, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, wbits=-zlib.MAX_WBITS)
    if encoding == "br":
        return bytes(brotli.decompress(body))
    return body


def headers_for(encoding: str | None, **extra: str) -> CIMultiDict[str]:
    """Headers as code-server sends its workbench: streamed, so chunked and without a length."""
    headers = CIMultiDict(
        [
            ("Content-Type", "text/html"),
            ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'nonce-abc'"),
            ("Vary", "Accept-Encoding"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]
    )
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    headers.extend(extra)
    return headers


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "raw-deflate", "br"])
def test_one_tag_before_head_end_in_every_encoding(encoding: str | None) -> None:
    wire = None if encoding is None else encoding.replace("raw-", "")
    headers = headers_for(wire)
    result = inject_watcher(200, "GET", headers, encode(encoding or "", WORKBENCH))
    assert result is not None
    new_headers, new_body = result
    document = decode(wire, new_body)
    assert document == WORKBENCH.replace(b"\t</head>", b"\t" + WATCHER_TAG + b"</head>")
    assert new_headers["Content-Length"] == str(len(new_body))
    # Chunked framing replaced by a length; every other header kept, in order, duplicates too.
    assert "Transfer-Encoding" not in new_headers
    del new_headers["Content-Length"]
    del headers["Transfer-Encoding"]
    assert list(new_headers.items()) == list(headers.items())


def test_a_wrong_content_length_is_replaced() -> None:
    headers = CIMultiDict({"Content-Type": "text/html; charset=utf-8", "Content-Length": "10"})
    result = inject_watcher(200, "GET", headers, WORKBENCH)
    assert result is not None
    assert result[0].getall("Content-Length") == [str(len(WORKBENCH) + len(WATCHER_TAG))]


@pytest.mark.parametrize(
    ("status", "method", "content_type"),
    [
        (200, "HEAD", "text/html"),
        (304, "GET", "text/html"),
        (204, "GET", "text/html"),
        (404, "GET", "text/html"),
        (500, "GET", "text/html"),
        (200, "GET", "application/json"),
        (200, "GET", "text/plain"),
        (200, "GET", "application/xhtml+xml"),
        (200, "GET", "text/html; charset=utf-16"),
        (200, "GET", ""),
    ],
)
def test_anything_but_a_2xx_html_document_passes_untouched(
    status: int, method: str, content_type: str
) -> None:
    headers = CIMultiDict({"Content-Type": content_type})
    assert not wants_watcher(status, method, headers)
    assert inject_watcher(status, method, headers, WORKBENCH) is None


@pytest.mark.parametrize("encoding", ["zstd", "gzip, br", "compress"])
def test_encodings_we_cannot_rewrite_pass_untouched(encoding: str) -> None:
    headers = CIMultiDict({"Content-Type": "text/html", "Content-Encoding": encoding})
    assert inject_watcher(200, "GET", headers, WORKBENCH) is None


def test_never_twice() -> None:
    first = inject_watcher(200, "GET", headers_for("br"), encode("br", WORKBENCH))
    assert first is not None
    assert inject_watcher(200, "GET", first[0], first[1]) is None


def test_without_head_the_tag_opens_the_body() -> None:
    page = b"<!doctype html><html><body class='x'><p>hi</p></body></html>"
    result = inject_watcher(200, "GET", headers_for(None), page)
    assert result is not None
    assert (
        result[1]
        == b"<!doctype html><html><body class='x'>" + WATCHER_TAG + b"<p>hi</p></body></html>"
    )


def test_without_head_or_body_the_tag_follows_the_doctype() -> None:
    # Before the doctype it would switch the browser to quirks mode.
    result = inject_watcher(200, "GET", headers_for(None), b"<!DOCTYPE html>\n<p>bare</p>")
    assert result is not None
    assert result[1] == b"<!DOCTYPE html>" + WATCHER_TAG + b"\n<p>bare</p>"


def test_a_head_end_inside_a_script_or_comment_is_not_the_head_end() -> None:
    page = (
        b"<html><head><!-- </head> --><script>var s = '</head>';</script>"
        b"<title>t</title></head><body></body></html>"
    )
    result = inject_watcher(200, "GET", headers_for(None), page)
    assert result is not None
    assert result[1] == page.replace(b"</title></head>", b"</title>" + WATCHER_TAG + b"</head>")


def test_served_epoch_is_stamped_on_the_tag() -> None:
    result = inject_watcher(200, "GET", headers_for(None), WORKBENCH, served_epoch=4)
    assert result is not None
    assert b'defer data-dumont-epoch="4"></script></head>' in result[1]


def test_large_documents_pass_untouched() -> None:
    big = b"<html><head></head><body>" + b"x" * MAX_DOCUMENT_BYTES + b"</body></html>"
    declared = headers_for(None, **{"Content-Length": str(len(big))})
    assert not wants_watcher(200, "GET", declared)
    assert inject_watcher(200, "GET", headers_for(None), big) is None


def test_a_small_body_that_inflates_past_the_cap_passes_untouched() -> None:
    bomb = gzip.compress(b"<html><head></head>" + b" " * (MAX_DOCUMENT_BYTES * 4))
    assert len(bomb) < 10_000
    assert inject_watcher(200, "GET", headers_for("gzip"), bomb) is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_corrupt_or_truncated_bodies_pass_untouched(encoding: str) -> None:
    whole = encode(encoding, WORKBENCH * 50)
    assert inject_watcher(200, "GET", headers_for(encoding), whole[: len(whole) // 2]) is None
    assert inject_watcher(200, "GET", headers_for(encoding), b"not compressed at all") is None


html_text = st.lists(
    st.sampled_from(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            "</head>",
            "<body>",
            "<body id='b'>",
            "</body>",
            "<script>",
            "</script>",
            "<!--",
            "-->",
            "<title>é ü 漢</title>",
            "<p>",
            "</HEAD>",
            "text ",
            "\n",
            "<BODY>",
            "<script src='x.js'></script>",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=html_text, encoding=st.sampled_from([None, "gzip", "deflate", "br"]))
def test_injection_adds_exactly_the_tag_and_nothing_else(text: str, encoding: str | None) -> None:
    original = text.encode()
    assume(WATCHER_TAG not in original)
    result = inject_watcher(200, "GET", headers_for(encoding), encode(encoding or "", original))
    assert result is not None
    new_headers, new_body = result
    assert int(new_headers["Content-Length"]) == len(new_body)
    document = decode(encoding, new_body)
    assert document.count(WATCHER_TAG) == 1
    assert document.replace(WATCHER_TAG, b"", 1) == original
    assert inject_watcher(200, "GET", new_headers, new_body) is None
