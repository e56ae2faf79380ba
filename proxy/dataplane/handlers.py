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
    """Who asked, kept per connection: the peer never changes, the Host seldom does."""
    host = head.first(b"host")
    facts = conn.facts
    if facts is None:
        trusted = bool(trusted_proxies) and ClientFacts.is_trusted(conn.peer, trusted_proxies)
        facts = conn.facts = ClientFacts(conn.peer, conn.scheme, host, trusted)
    elif facts.host != host:
        facts = conn.facts = ClientFacts(conn.peer, conn.scheme, host, facts.trusted)
    return facts


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
        self.navigation = Destination(router, None, 0.0, traffic)
        self.call = Destination(router, None, config.switch_wait, traffic)

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
        return HttpExchange(
            conn,
            head,
            self.navigation if is_navigation_head(head) else self.call,
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
