"""What each listener does with a screened request.

The public listener: the proxy's own paths under /__dumont/ go to the pages app (an aiohttp
application on a private Unix socket), WebSocket upgrades are spliced to the active backend, and
everything else is forwarded to it. The control listener hands every request to the control app
(admin API, metrics, dashboard), also on a private Unix socket: both listeners get the data
plane's limits and timeouts, and aiohttp serves what it serves well, off the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.headers import ClientFacts, IPNetwork
from proxy.pages import PREFIX
from proxy.validation import is_websocket_upgrade

from .exchange import Destination, HttpExchange, is_navigation_head
from .websocket import WebSocketExchange

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.observe import TrafficObserver

    from .connection import ClientConnection, Exchange
    from .messages import RequestHead
    from .router import Router
    from .upstream import UpstreamPool

__all__ = ["LocalAppHandler", "PublicHandler"]


def _facts(
    conn: ClientConnection, head: RequestHead, trusted_proxies: tuple[IPNetwork, ...]
) -> ClientFacts:
    if conn.trusted is None:  # once per connection: the peer does not change
        conn.trusted = bool(trusted_proxies) and ClientFacts.is_trusted(conn.peer, trusted_proxies)
    return ClientFacts(conn.peer, conn.scheme, head.first(b"host"), conn.trusted)


def _is_own_path(target: str) -> bool:
    return target.startswith(PREFIX) and (len(target) == len(PREFIX) or target[len(PREFIX)] in "/?")


class PublicHandler:
    def __init__(
        self,
        router: Router,
        traffic: TrafficObserver,
        config: Config,
        pages: UpstreamPool,
        hsts: str | None,
    ) -> None:
        self.router = router
        self.traffic = traffic
        self.config = config
        self.pages = pages
        self.hsts = hsts
        self.own = Destination(None, pages)

    def start(self, conn: ClientConnection, head: RequestHead) -> Exchange:
        config = self.config
        facts = _facts(conn, head, config.trusted_proxies)
        if _is_own_path(head.target):
            return HttpExchange(
                conn, head, self.own, facts, pages=self.pages, watcher=False, hsts=self.hsts
            )
        if is_websocket_upgrade(head):
            return WebSocketExchange(
                conn,
                head,
                self.router,
                self.traffic,
                facts,
                wait=config.switch_wait,
                hsts=self.hsts,
            )
        # A page load with no backend ready gets the transition page at once (issue 3); API
        # calls wait for the switch to finish.
        wait = 0.0 if is_navigation_head(head) else config.switch_wait
        return HttpExchange(
            conn,
            head,
            Destination(self.router, None, wait, self.traffic),
            facts,
            pages=self.pages,
            watcher=config.pages.watcher,
            hsts=self.hsts,
        )


class LocalAppHandler:
    """Every request to one local app (the control listener's)."""

    def __init__(self, app: UpstreamPool) -> None:
        self.app = app
        self.destination = Destination(None, app)

    def start(self, conn: ClientConnection, head: RequestHead) -> Exchange:
        facts = ClientFacts(conn.peer, conn.scheme, head.first(b"host"), False)
        return HttpExchange(
            conn, head, self.destination, facts, pages=self.app, watcher=False, hsts=None
        )
