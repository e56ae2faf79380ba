"""One request forwarded from an HTTP/2 stream: HttpExchange with HTTP/2's wire format.

Everything that decides (the backend, retries on a switch, the transition page, screening the
backend's answer, the watcher in code-server's documents, accounting) is HttpExchange's; this class
only writes the answer as HEADERS and DATA on the stream instead of HTTP/1.1 bytes. The head is
held, as for HTTP/1.1, until the first body byte or the end, so a backend that dies before then can
still be retried or answered with an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidict import CIMultiDict

from proxy.boundary import problem_answer
from proxy.errors import HTTPProblem
from proxy.headers import HOP_BY_HOP

from .exchange import HttpExchange
from .messages import RESPONSE_DROP
from .plain import NO_BODY_STATUSES

if TYPE_CHECKING:
    from proxy.headers import ClientFacts

    from .exchange import Destination
    from .h2_stream import H2Stream
    from .messages import RequestHead
    from .upstream import ResponseHead, UpstreamPool

__all__ = ["H2Exchange"]

Fields = list[tuple[bytes, bytes]]
_DOCUMENT_DROP = frozenset(str(h).lower() for h in HOP_BY_HOP) | {"content-length"}


class H2Exchange(HttpExchange):
    held: Fields | None = None

    def __init__(
        self,
        stream: H2Stream,
        head: RequestHead,
        destination: Destination,
        client: ClientFacts,
        *,
        pages: UpstreamPool,
        watcher: bool,
        hsts: str | None,
        extra_out: tuple[bytes, ...] = (),
    ) -> None:
        self.stream = stream  # before the base class starts: it may answer at once
        super().__init__(
            stream, head, destination, client,
            pages=pages, watcher=watcher, hsts=hsts, extra_out=extra_out,
        )  # fmt: skip

    def _send_continue(self) -> None:
        # Browsers never send Expect over HTTP/2; a client that does sends its body after a
        # short wait anyway (RFC 9110 10.1.1).
        return None

    def _status_fields(self, status: int, length: int | None) -> Fields:
        fields = [(b":status", b"%d" % status)]
        if length is not None and (self.method == "HEAD" or status not in NO_BODY_STATUSES):
            fields.append((b"content-length", b"%d" % length))
        return fields

    def _hold_head(self, head: ResponseHead) -> None:
        drop = RESPONSE_DROP | head.named if head.named else RESPONSE_DROP
        fields = self._status_fields(head.status, head.content_length)
        # HTTP/2 field names are lowercase (RFC 9113 8.2.1); the head's names are, already.
        fields += [
            (lowered, value)
            for lowered, (_, value) in zip(head.names, head.headers, strict=True)
            if lowered not in drop
        ]
        if self.hsts is not None and b"strict-transport-security" not in head.fields:
            fields.append((b"strict-transport-security", self.hsts.encode()))
        self.held = fields

    def _prepare_head(self, headers: CIMultiDict[str], length: int | None) -> None:
        assert self.answered is not None
        if self.hsts is not None:
            headers.setdefault("Strict-Transport-Security", self.hsts)
        fields = self._status_fields(self.answered.status, length)
        fields += [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
            if name.lower() not in _DOCUMENT_DROP
        ]
        self.held = fields

    def _flush_head(self, end_stream: bool) -> None:
        held, self.held = self.held, None
        if held is not None:
            self.stream.send_headers(held, end_stream)

    def _send_body(self, data: bytes) -> None:
        if self.held is not None:
            self._flush_head(False)
        self.stream.write(data)

    def _send_end(self) -> None:
        if self.held is not None:
            self._flush_head(True)  # a response without a body: END_STREAM on its HEADERS
        else:
            self.stream.end()

    def _drop_held(self) -> None:
        self.held = None

    def _send_problem(self, problem: HTTPProblem) -> None:
        answer, body = problem_answer(problem)
        fields = self._status_fields(problem.status, len(body))
        fields += [(k.lower().encode(), v.encode("latin-1")) for k, v in answer.items()]
        if self.hsts is not None:
            fields.append((b"strict-transport-security", self.hsts.encode()))
        self.stream.send_headers(fields, False)
        self.stream.write(body)
        self.stream.end()
