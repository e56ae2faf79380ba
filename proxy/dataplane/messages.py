"""HTTP/1.1 messages as the data plane holds them, and their serialisation.

Header names and values stay bytes from the parser to the socket except where a rule must read
them; ``headers`` is the same list decoded as latin-1 into a CIMultiDict (a byte-exact round
trip), which proxy.headers and proxy.validation work on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

from multidict import CIMultiDict

__all__ = ["SECURITY_HEADERS", "RequestHead", "closing_response", "serialize_head"]

# On every answer the proxy writes itself (refusals, errors): nothing to sniff, frame or cache.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str  # as sent: origin-form once screened
    version: str  # "1.0", "1.1" (anything else is refused by screening)
    raw_headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    headers: CIMultiDict[str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers
        )

    @property
    def chunked(self) -> bool:
        return "Transfer-Encoding" in self.headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return None if value is None else int(value)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


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
        **SECURITY_HEADERS,
        **(extra or {}),
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return f"HTTP/{version} {status} {phrase}\r\n{head}\r\n".encode("latin-1") + body
