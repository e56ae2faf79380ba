"""What each listener does with a screened request.

The public listener: the proxy's own paths under /__dumont/ go to the pages app (an aiohttp
application on a private Unix socket). Every other request is for the workspace its Host names
(a Directory lookup): WebSocket upgrades are spliced to its active backend, everything else is
forwarded to it. A Host no workspace answers goes to the pages app too, for its 404.

The control listener hands every request to the control app (admin API, metrics, dashboard),
also on a private Unix socket: both listeners get the data plane's limits and timeouts, and
aiohttp serves what it serves well, off the hot path.

With sign-in at the proxy (issue 17), the Gate sees each public request first: one it refuses goes
to the pages app with the gate's header, never to a backend, and the pages app answers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.headers import ClientFacts, IPNetwork
from proxy.pages import PREFIX
from proxy.validation import is_websocket_upgrade

from .exchange import Destination, is_navigation_head

if TYPE_CHECKING:
    from proxy.config import Config

    from .client import ClientSide
    from .connection import Exchange
    from .messages import RequestHead
    from .router import Directory, Gate
    from .upstream import UpstreamPool

__all__ = ["LocalAppHandler", "PublicHandler"]


def _facts(
    conn: ClientSide, head: RequestHead, trusted_proxies: tuple[IPNetwork, ...]
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
        directory: Directory,
        config: Config,
        pages: UpstreamPool,
        hsts: str | None,
        gate: Gate | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.pages = pages
        self.hsts = hsts
        self.own = Destination(None, pages)
        self.gate = gate

    def start(self, conn: ClientSide, head: RequestHead) -> Exchange:
        config = self.config
        facts = _facts(conn, head, config.trusted_proxies)
        gate = self.gate
        if gate is not None and (refusal := gate.refusal(head, facts.host)) is not None:
            # To the pages app, with the gate's header saying why.
            return conn.http_exchange(
                head,
                self.own,
                facts,
                pages=self.pages,
                watcher=False,
                hsts=self.hsts,
                extra_out=(refusal,),
            )
        route = None if _is_own_path(head.target) else self.directory.for_host(facts.host)
        if route is None:
            return conn.http_exchange(
                head, self.own, facts, pages=self.pages, watcher=False, hsts=self.hsts
            )
        if is_websocket_upgrade(head):
            return conn.websocket_exchange(
                head,
                route.router,
                route.traffic,
                facts,
                wait=route.switch_wait,
                hsts=self.hsts,
            )
        # A page load with no backend ready gets the transition page at once (issue 3); API
        # calls wait for the switch to finish.
        return conn.http_exchange(
            head,
            route.navigation if is_navigation_head(head) else route.call,
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

    def start(self, conn: ClientSide, head: RequestHead) -> Exchange:
        facts = ClientFacts(conn.peer, conn.scheme, head.first(b"host"), False)
        return conn.http_exchange(
            head, self.destination, facts, pages=self.app, watcher=False, hsts=None
        )
