"""Inserting the watcher's script tag into code-server's HTML documents.

Pure functions on a status, a method, headers and a complete body: the proxy core buffers a
response only when `wants_watcher()` says yes, then calls `inject_watcher()` and forwards either its
result or, when it returns None, the original response byte for byte.

What changes in an injected response: one `<script src="/__dumont/static/watcher.js" defer>` tag in
the document (re-compressed with the same Content-Encoding), a Content-Length matching the new body,
and no Transfer-Encoding. Every other header, and every other byte of the document, is kept.

code-server 4.139 streams its HTML (chunked, no Content-Length) and compresses it with br, gzip or
deflate, whichever the browser offers first in that order (docs/CODE-SERVER.md). The workbench's CSP
allows `script-src 'self'`, so a same-origin script tag runs there without touching the CSP.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import brotli  # type: ignore[import-untyped]  # brotli ships no type information
from multidict import CIMultiDict

__all__ = ["MAX_DOCUMENT_BYTES", "WATCHER_SRC", "WATCHER_TAG", "inject_watcher", "wants_watcher"]

WATCHER_SRC = "/__dumont/static/watcher.js"
WATCHER_TAG = f'<script src="{WATCHER_SRC}" defer></script>'.encode()
# code-server's workbench document is about 4 KiB and its login page about 3 KiB. Anything far
# larger is not a document we need to watch, and decoding it would cost memory: pass it untouched.
MAX_DOCUMENT_BYTES = 1 << 20

_SUPPORTED_ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate", "br"})
# The only charsets in which the ASCII bytes of our tag and of `</head>` mean what they say.
_ASCII_INCOMPATIBLE = re.compile(r"utf-?16|utf-?32|ucs-?2", re.IGNORECASE)
# The first of these that is not inside a comment or a script decides where the tag goes; comments
# and scripts are matched whole so that a "</head>" inside them is skipped.
_LANDMARKS = re.compile(
    rb"<!--.*?-->|<script\b.*?</script\s*>|(?P<head_end></head\s*>)|(?P<body_start><body\b[^>]*>)",
    re.IGNORECASE | re.DOTALL,
)
_DOCUMENT_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*(?:<!doctype[^>]*>)?(?:\s*<html\b[^>]*>)?",
    re.IGNORECASE | re.DOTALL,
)


def wants_watcher(status: int, method: str, headers: Mapping[str, str]) -> bool:
    """Whether a backend response is an HTML document worth buffering for the watcher: a 2xx answer
    to a request other than HEAD, text/html in an ASCII-compatible charset, in an encoding we can
    re-encode, and not declared larger than MAX_DOCUMENT_BYTES."""
    if not 200 <= status < 300 or status in {204, 205} or method.upper() == "HEAD":
        return False
    media_type, _, parameters = headers.get("Content-Type", "").partition(";")
    if media_type.strip().lower() != "text/html" or _ASCII_INCOMPATIBLE.search(parameters):
        return False
    if _content_encoding(headers) not in _SUPPORTED_ENCODINGS:
        return False
    declared = headers.get("Content-Length")
    return declared is None or (declared.isdigit() and int(declared) <= MAX_DOCUMENT_BYTES)


def inject_watcher(
    status: int,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    served_epoch: int | None = None,
) -> tuple[CIMultiDict[str], bytes] | None:
    """The response with the watcher's tag inserted, or None to forward the original untouched
    (not a document for us, too large, undecodable, or already carrying the tag).

    `served_epoch`, the failover epoch under which this document was served, goes into the tag as
    `data-dumont-epoch` when given: a switch between this response and the watcher's subscription
    is then still noticed (static/watcher.js)."""
    if not wants_watcher(status, method, headers) or len(body) > MAX_DOCUMENT_BYTES:
        return None
    encoding = _content_encoding(headers)
    document = _decode(encoding, body)
    if document is None or WATCHER_SRC.encode() in document:
        return None
    tag = WATCHER_TAG
    if served_epoch is not None:
        stamped = f'<script src="{WATCHER_SRC}" defer data-dumont-epoch="{int(served_epoch)}">'
        tag = stamped.encode() + b"</script>"
    new_body = _encode(encoding, _insert_tag(document, tag), original=body)
    new_headers = CIMultiDict(headers)
    # The body is now complete and of known size; a chunked framing header would contradict it.
    new_headers.popall("Transfer-Encoding", None)
    new_headers["Content-Length"] = str(len(new_body))
    return new_headers, new_body


def _content_encoding(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Encoding", "identity").strip().lower() or "identity"


def _insert_tag(document: bytes, tag: bytes) -> bytes:
    """Before `</head>`; else right after `<body ...>`; else after the doctype and `<html>` (a
    script before the doctype would switch the browser into quirks mode)."""
    for landmark in _LANDMARKS.finditer(document):
        if landmark.group("head_end"):
            at = landmark.start()
            break
        if landmark.group("body_start"):
            at = landmark.end()
            break
    else:
        start = _DOCUMENT_START.match(document)
        at = start.end() if start else 0
    return document[:at] + tag + document[at:]


def _decode(encoding: str, body: bytes) -> bytes | None:
    """The decoded document, or None if it is corrupt, truncated or decodes to more than
    MAX_DOCUMENT_BYTES (a small compressed body can expand enormously)."""
    try:
        if encoding == "identity":
            return body
        if encoding in {"gzip", "x-gzip"}:
            return _inflate(body, wbits=16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            # RFC 9110 "deflate" is zlib-wrapped; some servers send raw deflate. Accept both.
            wrapped = _inflate(body, wbits=zlib.MAX_WBITS)
            return wrapped if wrapped is not None else _inflate(body, wbits=-zlib.MAX_WBITS)
        return _unbrotli(body)
    except (zlib.error, brotli.error):
        return None


def _inflate(body: bytes, wbits: int) -> bytes | None:
    try:
        inflater = zlib.decompressobj(wbits=wbits)
        document = inflater.decompress(body, MAX_DOCUMENT_BYTES + 1)
    except zlib.error:
        return None
    if len(document) > MAX_DOCUMENT_BYTES or not inflater.eof:
        return None
    return document


def _unbrotli(body: bytes) -> bytes | None:
    decompressor = brotli.Decompressor()
    document: bytes = decompressor.process(body, output_buffer_limit=MAX_DOCUMENT_BYTES + 1)
    if len(document) > MAX_DOCUMENT_BYTES or not decompressor.is_finished():
        return None
    return document


def _encode(encoding: str, document: bytes, *, original: bytes) -> bytes:
    if encoding == "identity":
        return document
    if encoding in {"gzip", "x-gzip"}:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return compressor.compress(document) + compressor.flush()
    if encoding == "deflate":
        # Answer in the same flavour the backend used, since the browser accepted that one.
        raw = _inflate(original, wbits=zlib.MAX_WBITS) is None
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return compressor.compress(document) + compressor.flush()
    # Quality 5: a few milliseconds even for a large page; 11 (the default) costs far more.
    encoded: bytes = brotli.compress(document, mode=brotli.MODE_TEXT, quality=5)
    return encoded
