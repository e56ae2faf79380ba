"""WebSocket forwarding for every path (the workbench, /proxy/<port>, /absproxy/<port>) as a tunnel.

The browser's upgrade request goes to the backend first; only when the backend answers 101 does
the browser get that same 101 (with the subprotocol and extensions the backend chose), so a
refusal (401 before login, 403 for a bad origin) reaches the browser as the backend said it. After
the 101 the bytes are copied both ways untouched: pings, close codes, compression and messages of
any size pass as they are.

Why bytes and not frames: bench/ws_relay.py measured, back to back, +52 us per round trip at p50 for
relaying frames through aiohttp's WebSocket reader and writer, and +21 us for this tunnel (the
issue's bar is 50 us). The proxy still ends a tunnel cleanly: on a switch (1012) or shutdown
(1001) it sends the browser a close frame itself, then drops both connections.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict

from .backends import Backend
from .errors import UpstreamError, UpstreamTimeout
from .headers import HOP_BY_HOP, ClientFacts, request_headers
from .validation import refuse_bad_upgrade_answer
from .workspace import Workspace

__all__ = ["WebSocketTunnel", "close_frame", "forward_websocket", "is_websocket_upgrade"]

RESPONSE_HEAD_LIMIT = 64 * 1024
# Past this much unsent data toward one side, stop reading from the other until it drains.
HIGH_WATER = 256 * 1024


def is_websocket_upgrade(request: web.Request) -> bool:
    upgrade = request.headers.get(hdrs.UPGRADE, "")
    return upgrade.lower() == "websocket" and request.method == hdrs.METH_GET


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """An unmasked close frame, as a server sends it (RFC 6455 5.5.1)."""
    payload = code.to_bytes(2, "big") + reason[:123]
    return bytes((0x88, len(payload))) + payload


class _BackendSide(asyncio.Protocol):
    """The connection to the backend: collects its response head, then feeds the tunnel."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.head_ready: asyncio.Future[None] = loop.create_future()
        self.tunnel: WebSocketTunnel | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.to_browser(data)
            return
        # Bytes behind the 101 that arrive before the tunnel takes over stay in head; the tunnel
        # forwards them first.
        self.head += data
        if self.head_ready.done():
            return
        if b"\r\n\r\n" in self.head:
            self.head_ready.set_result(None)
        elif len(self.head) > RESPONSE_HEAD_LIMIT:
            self.head_ready.set_exception(UpstreamError("backend response head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head_ready.done():
            self.head_ready.set_exception(UpstreamError("backend closed before answering"))
        if self.tunnel is not None:
            self.tunnel.end()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.browser.pause_reading()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.browser.resume_reading()


class WebSocketTunnel:
    """Copies bytes between the browser's connection and the backend's until either ends.

    It sits in aiohttp's request handler as the payload parser of an upgraded connection: aiohttp
    hands it every byte the browser sends after the 101, and ``feed_eof`` when the browser goes.
    """

    def __init__(self, browser: asyncio.Transport, backend: _BackendSide) -> None:
        assert backend.transport is not None
        self.browser = browser
        self.backend = backend.transport
        self.relayed = [0, 0]  # bytes: [to the backend, to the browser]
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    # aiohttp's payload-parser interface (web_protocol.RequestHandler.set_parser)
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.relayed[0] += len(data)
        self.backend.write(data)
        return False, b""

    def feed_eof(self) -> None:
        self.end()

    def to_browser(self, data: bytes) -> None:
        self.relayed[1] += len(data)
        self.browser.write(data)
        if self.browser.get_write_buffer_size() > HIGH_WATER and self._drain is None:
            # A browser that reads slowly must not make us buffer the backend without bound.
            self.backend.pause_reading()
            self._drain = asyncio.get_running_loop().create_task(
                self._resume_when_drained(), name="ws-tunnel-drain"
            )

    async def _resume_when_drained(self) -> None:
        while not self.done.done() and self.browser.get_write_buffer_size() > HIGH_WATER // 4:
            await asyncio.sleep(0.01)
        if not self.done.done():
            self.backend.resume_reading()
        self._drain = None

    def end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        self.backend.close()
        self.browser.close()
        if self._drain is not None:
            self._drain.cancel()

    async def shutdown(self, code: int, message: bytes) -> None:
        """End the tunnel from outside: the browser gets a close frame with ``code`` first."""
        if not self.browser.is_closing():
            self.browser.write(close_frame(code, message))
        self.end()


def _handshake(request: web.Request, backend: Backend, client: ClientFacts) -> bytes:
    headers = request_headers(request.headers, client)  # keeps the Sec-WebSocket-* fields
    headers[hdrs.UPGRADE] = "websocket"
    headers[hdrs.CONNECTION] = "Upgrade"
    target = backend.target(request.raw_path)
    lines = [f"GET {target.raw_path_qs} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str], int]:
    """Status, reason, headers, and the length of the head (what follows it is WebSocket data)."""
    raw, _, _ = head.partition(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    version, _, tail = status_line.partition(" ")
    code, _, reason = tail.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
        raise UpstreamError(f"backend sent a bad status line: {status_line[:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in line for c in "\0\r\n"):
            raise UpstreamError("backend sent a malformed header in its upgrade answer")
        headers.add(name, value.strip())
    return int(code), reason, headers, len(raw) + 4


async def _connect(backend: Backend, workspace: Workspace) -> _BackendSide:
    url = backend.url
    assert url.host is not None  # config accepts no URL without a host
    loop = asyncio.get_running_loop()
    context: Any = ssl.create_default_context() if url.scheme == "https" else None
    try:
        _, side = await asyncio.wait_for(
            loop.create_connection(_BackendSide, url.host, url.port or 80, ssl=context),
            workspace.config.connect_timeout,
        )
    except (OSError, TimeoutError) as exc:
        workspace.report_passive_failure(backend, f"websocket connect failed: {exc}")
        raise UpstreamError(f"{backend.name}: websocket connect failed") from exc
    return side


async def forward_websocket(
    request: web.Request, workspace: Workspace, client: ClientFacts
) -> web.StreamResponse:
    backend = await workspace.acquire(workspace.config.switch_wait)
    side = await _connect(backend, workspace)
    assert side.transport is not None
    try:
        side.transport.write(_handshake(request, backend, client))
        await asyncio.wait_for(side.head_ready, workspace.config.switch_wait)
        status, reason, headers, head_length = _parse_head(bytes(side.head))
        refuse_bad_upgrade_answer(status, reason, headers)  # issue 7: response scrutiny
    except TimeoutError:
        side.transport.close()
        raise UpstreamTimeout(f"{backend.name}: no answer to the WebSocket upgrade") from None
    except BaseException:
        side.transport.close()
        raise
    if status != 101:
        side.transport.close()
        # The backend answered, but not with 101 (401 before login, 403 for a bad origin, ...).
        return web.Response(status=status, text=f"backend refused the WebSocket: {reason}")
    return await _run_tunnel(request, workspace, backend, side, headers, head_length)


async def _run_tunnel(
    request: web.Request,
    workspace: Workspace,
    backend: Backend,
    side: _BackendSide,
    headers: CIMultiDict[str],
    head_length: int,
) -> web.StreamResponse:
    passed = CIMultiDict(
        (k, v) for k, v in headers.items() if k not in HOP_BY_HOP or k == hdrs.UPGRADE
    )
    passed[hdrs.CONNECTION] = "Upgrade"
    response = web.StreamResponse(status=101, reason="Switching Protocols", headers=passed)
    await response.prepare(request)
    transport = request.transport
    if transport is None:  # the browser left during the handshake
        assert side.transport is not None
        side.transport.close()
        return response
    tunnel = WebSocketTunnel(transport, side)
    side.tunnel = tunnel
    if early := bytes(side.head[head_length:]):  # frames the backend sent right behind its 101
        tunnel.to_browser(early)
    # From here aiohttp hands every byte the browser sends to the tunnel (and its tail at once).
    request.protocol.set_parser(tunnel)  # type: ignore[arg-type]
    backend.websockets.add(tunnel)
    workspace.traffic.websocket_opened(backend.name)
    try:
        await tunnel.done
    finally:
        tunnel.end()
        backend.websockets.discard(tunnel)
        workspace.traffic.websocket_closed(backend.name, *tunnel.relayed)
    return response
