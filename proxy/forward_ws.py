"""WebSocket forwarding for every path: the workbench, /proxy/<port>, /absproxy/<port>.

The upstream handshake completes before the browser's, so the browser is only told "101" when the
backend really accepted, and with the subprotocol the backend chose. Frames are relayed one by one
(text, binary, ping, pong, close with its code); when either side ends, the other relay task is
cancelled and both ends are closed.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, hdrs, web

from .backends import Backend
from .errors import UpstreamError
from .headers import ClientFacts, websocket_request_headers
from .workspace import Workspace

__all__ = ["MAX_MESSAGE", "WebSocketBridge", "forward_websocket", "is_websocket_upgrade"]

# The workbench sends whole files over its socket; 64 MiB is the floor the issue sets.
MAX_MESSAGE = 64 * 1024 * 1024
CLOSE_TIMEOUT = 5.0


def is_websocket_upgrade(request: web.Request) -> bool:
    upgrade = request.headers.get(hdrs.UPGRADE, "")
    return upgrade.lower() == "websocket" and request.method == hdrs.METH_GET


def _sendable(code: int | None) -> int:
    """Codes 1005/1006/1015 only describe a close; they may not be sent in a close frame."""
    if code is None or code in (1005, 1006, 1015) or not 1000 <= code <= 4999:
        return 1000
    return code


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: Socket, sink: Socket, counted: list[int], slot: int) -> None:
    while True:
        msg = await source.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            counted[slot] += len(msg.data)
            await sink.send_str(msg.data)
        elif kind is WSMsgType.BINARY:
            counted[slot] += len(msg.data)
            await sink.send_bytes(msg.data)
        elif kind is WSMsgType.PING:
            await sink.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            await sink.close(code=_sendable(msg.data), message=(msg.extra or "").encode())
            return
        else:  # CLOSING, CLOSED, ERROR: the source is gone without a close frame.
            code = source.close_code
            await sink.close(code=_sendable(code if code else 1011))
            return


class WebSocketBridge:
    """Relays one browser WebSocket to one backend WebSocket until either ends."""

    def __init__(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse):
        self.client = client
        self.upstream = upstream
        self.relayed = [0, 0]  # message payload bytes: [to the backend, to the browser]
        self._tasks: tuple[asyncio.Task[None], ...] = ()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(
                _pump(self.client, self.upstream, self.relayed, 0), name="ws-client-to-backend"
            ),
            loop.create_task(
                _pump(self.upstream, self.client, self.relayed, 1), name="ws-backend-to-client"
            ),
        )
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._stop_tasks()
            await self._close_both(1000, b"")

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_both(self, code: int, message: bytes) -> None:
        for ws in (self.client, self.upstream):
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)

    async def shutdown(self, code: int, message: bytes) -> None:
        """End the relay from outside (a switch: 1012; proxy shutdown: 1001)."""
        await self._stop_tasks()
        await self._close_both(code, message)


async def forward_websocket(
    request: web.Request, workspace: Workspace, client: ClientFacts
) -> web.StreamResponse:
    backend: Backend = await workspace.acquire(workspace.config.switch_wait)
    offered = [
        p.strip()
        for value in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for p in value.split(",")
        if p.strip()
    ]
    try:
        upstream = await backend.ws_session.ws_connect(
            backend.target(request.raw_path),
            headers=websocket_request_headers(request.headers, client),
            protocols=offered,
            autoclose=False,
            autoping=False,
            max_msg_size=MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
        )
    except aiohttp.WSServerHandshakeError as exc:
        # The backend answered, but not with 101 (401 before login, 403 for a bad origin, ...).
        return web.Response(status=exc.status, text=f"backend refused the WebSocket: {exc.message}")
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        workspace.report_passive_failure(backend, f"websocket connect failed: {exc}")
        raise UpstreamError(f"{backend.name}: websocket connect failed") from exc

    ws = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=False,
        max_msg_size=MAX_MESSAGE,
        compress=False,
        timeout=CLOSE_TIMEOUT,
    )
    try:
        await ws.prepare(request)
    except BaseException:
        await upstream.close()
        raise
    bridge = WebSocketBridge(ws, upstream)
    backend.websockets.add(bridge)
    workspace.traffic.websocket_opened(backend.name)
    try:
        await bridge.run()
    finally:
        backend.websockets.discard(bridge)
        workspace.traffic.websocket_closed(backend.name, *bridge.relayed)
    return ws
