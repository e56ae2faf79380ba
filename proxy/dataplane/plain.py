"""The plain heads, read in one pass: the common request and the common response without a
Python call per field from llhttp.

A plain request is a GET or HEAD whose head came whole in one read, with an origin-form target of
plain URL characters, every name a token, every value free of control characters, and no field
that brings a body or a protocol switch. A plain response is an HTTP/1.1 answer (no 1xx) whose head
came whole, with the same fields and a body of known length (one Content-Length of digits, or
none for 204 and 304). Anything else makes these return None and goes to llhttp, which then
refuses or reads it exactly as it always did. tests/security/test_plain_heads.py generates heads
and holds the two readings equal wherever these accept one.
"""

from __future__ import annotations

import re

from .messages import RESPONSE_FIELDS, RequestHead, ResponseHead, connection_tokens, read_fields

__all__ = ["NO_BODY_STATUSES", "plain_request", "plain_response"]

NO_BODY_STATUSES = frozenset({204, 304})
_FIELDS = rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
_REQUEST = re.compile(
    rb"(GET|HEAD) (/[-A-Za-z0-9._~!$&'()*+,;=:@/?%]*) HTTP/1\.([01])\r\n" + _FIELDS
)
_RESPONSE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)\r\n" + _FIELDS)
# Name and value of each line of a head already checked whole: one C call for all of them. Like
# llhttp, only the whitespace before a value is dropped. (The check leaves no colon in a name and
# no CR in a value, so the simplest classes do; they scan faster.)
_FIELD = re.compile(rb"([^:]+):[ \t]*([^\r]*)\r\n")


def plain_request(
    data: bytes, max_head: int, max_target: int, max_fields: int
) -> tuple[RequestHead, int] | None:
    """The plain request at the start of ``data`` and the offset just past its head, or None.
    Past any of the limits it is None too: llhttp's path then refuses with the right status."""
    if not data.startswith((b"GET ", b"HEAD ")):
        return None
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or end > max_head:
        return None
    match = _REQUEST.match(data, 0, end)
    if match is None or match.end() != end or len(match[2]) > max_target:
        return None
    headers: list[tuple[bytes, bytes]] = _FIELD.findall(match[4])
    if len(headers) > max_fields:
        return None
    http10 = match[3] == b"0"
    head = RequestHead(match[1].decode("ascii"), match[2].decode("latin-1"),
                       "1.0" if http10 else "1.1", headers, True)  # fmt: skip
    fields = head.fields
    if b"content-length" in fields or b"transfer-encoding" in fields or b"upgrade" in fields:
        return None
    connection = fields.get(b"connection")
    if connection is not None:
        tokens = connection_tokens(connection)
        head.keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
    elif http10:
        head.keep_alive = False
    return head, end


def plain_response(
    data: bytes, max_head: int, max_fields: int
) -> tuple[ResponseHead, int, int] | None:
    """The plain response at the start of ``data``: its head, the offset just past it and its
    body's length; or None."""
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or end > max_head:
        return None
    match = _RESPONSE.match(data, 0, end)
    if match is None or match.end() != end:
        return None
    headers: list[tuple[bytes, bytes]] = _FIELD.findall(match[3])
    if len(headers) > max_fields:
        return None
    names, fields = read_fields(headers, RESPONSE_FIELDS)
    status = int(match[1])
    lengths = fields.get(b"content-length")
    if b"transfer-encoding" in fields or (lengths is None and status not in NO_BODY_STATUSES):
        return None  # chunked, or framed by the connection's end
    if lengths is not None and (len(lengths) != 1 or not lengths[0].isdigit()):
        return None  # llhttp refuses it, or the screening does with its reason
    connection = fields.get(b"connection")
    named = connection_tokens(connection) if connection is not None else frozenset()
    head = ResponseHead(status, match[2].decode("latin-1"), "1.1", headers, b"close" not in named,
                        names, fields, named, data[: match.end(2)])  # fmt: skip
    length = 0 if lengths is None or status in NO_BODY_STATUSES else int(lengths[0])
    return head, end, length
