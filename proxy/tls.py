"""TLS termination on the public listener, so a deployment needs no second proxy in front.

Given ``tls.cert`` and ``tls.key`` the public listener speaks HTTPS only (TLS 1.2 or later,
HTTP/2 or HTTP/1.1 by ALPN); ``tls.hsts`` adds Strict-Transport-Security to every response it sends
(``hsts_value``). A handshake must finish within ``limits.header_timeout``
(proxy.dataplane.listener).
"""

from __future__ import annotations

import ssl

from .config import TLSConfig
from .errors import ConfigError

__all__ = ["hsts_value", "server_context"]


def server_context(tls: TLSConfig, http2: bool = False) -> ssl.SSLContext | None:
    """The listener's SSL context, or None without a certificate. ``http2``: ALPN offers ``h2``
    first (issue 19); HTTP/1.1 stays on offer for clients without it."""
    if not tls.cert or not tls.key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls.cert", f"cannot load {tls.cert} with key {tls.key}: {exc}") from None
    return context


def hsts_value(tls: TLSConfig) -> str | None:
    """The Strict-Transport-Security header's value, or None when it is not sent."""
    if not tls.cert or not tls.hsts:
        return None
    return f"max-age={int(tls.hsts)}"
