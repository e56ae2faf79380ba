"""TLS termination on the public listener, so a deployment needs no second proxy in front.

Given ``tls.cert`` and ``tls.key`` the public listener speaks HTTPS only (TLS 1.2 or later,
HTTP/1.1 by ALPN); ``tls.hsts`` adds Strict-Transport-Security to every response it sends. A
handshake must finish within ``limits.header_timeout``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web

from .config import TLSConfig
from .errors import ConfigError

__all__ = ["TLSSite", "add_hsts", "server_context"]


def server_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """The listener's SSL context, or None without a certificate."""
    if not tls.cert or not tls.key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls.cert", f"cannot load {tls.cert} with key {tls.key}: {exc}") from None
    return context


def add_hsts(app: web.Application, tls: TLSConfig) -> None:
    """Send Strict-Transport-Security on every response of ``app`` (before it is frozen)."""
    if not tls.cert or not tls.hsts:
        return
    value = f"max-age={int(tls.hsts)}"

    async def hsts(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("Strict-Transport-Security", value)

    app.on_response_prepare.append(hsts)


class TLSSite(web.TCPSite):
    """A TCPSite whose TLS handshakes must finish within ``handshake_timeout`` seconds.

    asyncio's default is 60 s, and a connection is only counted and timed by proxy.limits once its
    handshake is done: a client that opens sockets and never finishes a handshake would hold each
    for a minute. aiohttp's TCPSite does not pass the timeout on, so ``start`` does (as aiohttp's).
    """

    def __init__(self, *args: Any, handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshake_timeout = handshake_timeout

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.handshake_timeout if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
