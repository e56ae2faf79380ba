"""What setup_pages() leaves on the application for the handlers and for the core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.tasks import TaskSet

from .config import PagesConfig
from .render import TransitionRenderer
from .static_files import StaticFile
from .tips import TipBook
from .view import SwitchSnapshot, SwitchView

__all__ = ["PAGES", "PagesState", "ViewLookup"]

# The view of the workspace a request is about (one proxy serves many, by Host: proxy.sites);
# raises proxy.errors.NotFound when the request names none.
ViewLookup = Callable[[web.Request], SwitchView]


@dataclass
class PagesState:
    views: ViewLookup
    config: PagesConfig
    renderer: TransitionRenderer
    tip_book: TipBook
    static: dict[str, StaticFile]
    keepalive_interval: float
    # One queue per open /__dumont/events stream; None in a queue tells its stream to end.
    streams: set[asyncio.Queue[SwitchSnapshot | None]] = field(default_factory=set)
    tasks: TaskSet = field(default_factory=lambda: TaskSet("pages"))
    # The tips of the workspace a request is about, when workspaces have their own ([pages] tips
    # in a workspace's overrides); None: tip_book for every request.
    tip_books: Callable[[web.Request], TipBook] | None = None

    def view_for(self, request: web.Request) -> SwitchView:
        return self.views(request)

    def tips_for(self, request: web.Request) -> TipBook:
        return self.tip_book if self.tip_books is None else self.tip_books(request)


PAGES: web.AppKey[PagesState] = web.AppKey("dumont_pages", PagesState)
