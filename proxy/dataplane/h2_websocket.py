"""A WebSocket inside an HTTP/2 stream (RFC 8441), bridged to the backend's HTTP/1.1 upgrade.

The browser opens it with an extended CONNECT (``:protocol websocket``), which
proxy.dataplane.h2_request turns into the HTTP/1.1 upgrade GET the backend expects. Everything
else is WebSocketExchange's: the backend answers first (a refusal reaches the browser as the
backend said it), then bytes are copied both ways untouched, and a switch (1012) or shutdown
(1001) closes with a frame the proxy writes. What differs is the carriage: the backend's 101
becomes a 200 on the stream, the browser's frames arrive as DATA, ours leave as DATA, the end is
END_STREAM, and backpressure is the stream's window rather than the socket's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidict import CIMultiDict

from proxy.boundary import problem_answer
from proxy.headers import HOP_BY_HOP

from .websocket import WebSocketExchange

if TYPE_CHECKING:
    from proxy.errors import HTTPProblem
    from proxy.headers import ClientFacts
    from proxy.observe import TrafficObserver

    from .h2_stream import H2Stream
    from .messages import RequestHead
    from .router import Router

__all__ = ["H2WebSocketExchange"]

# Not for the browser: the handshake's own fields belong to the HTTP/1.1 hop (RFC 8441 5).
_DROP = frozenset(str(h).lower() for h in HOP_BY_HOP) | {
    "sec-websocket-accept",
    "content-length",
}


class H2WebSocketExchange(WebSocketExchange):
    def __init__(
        self,
        stream: H2Stream,
        head: RequestHead,
        router: Router,
        traffic: TrafficObserver,
        client: ClientFacts,
        *,
        wait: float,
        hsts: str | None,
    ) -> None:
        self.stream = stream
        self.early: list[bytes] = []  # DATA that came before the backend answered
        super().__init__(stream, head, router, traffic, client, wait=wait, hsts=hsts)

    def _answer_refusal(self, status: int, reason: str, body: bytes) -> None:
        fields = [(b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"%d" % len(body))]  # fmt: skip
        self.stream.send_headers(fields, False)
        self.stream.write(body)
        self.stream.end()
        self.stream.finished(status, len(body), 0)

    def _accept(self, headers: CIMultiDict[str]) -> bytes:
        fields = [(b":status", b"200")]
        fields += [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
            if k.lower() not in _DROP
        ]
        self.stream.send_headers(fields, False)
        early, self.early = b"".join(self.early), []
        return early

    def _send_problem(self, problem: HTTPProblem) -> None:
        answer, body = problem_answer(problem)
        fields = [(b":status", b"%d" % problem.status), (b"content-length", b"%d" % len(body))]
        fields += [(k.lower().encode(), v.encode("latin-1")) for k, v in answer.items()]
        self.stream.send_headers(fields, False)
        self.stream.write(body)
        self.stream.end()

    def throttle_client(self, writable: bool) -> None:
        if writable:
            self.stream.resume_reading_for("upstream")
        else:
            self.stream.pause_reading_for("upstream")

    def _close_client(self) -> None:
        self.stream.end()
        if self.spliced:
            self.stream.finished(200, self.relayed[1], self.relayed[0])

    # The browser's frames come as the stream's DATA, not through a tunnel.
    def body_received(self, data: bytes) -> None:
        if self.spliced:
            self._to_backend(data)
        else:
            self.early.append(data)

    def body_complete(self) -> None:
        if self.spliced:
            self.end()  # the browser ended its side of the stream
