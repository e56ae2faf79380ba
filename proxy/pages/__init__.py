"""The switch as the user sees it: the transition page, the in-IDE watcher, and the tip card.

How the proxy core uses this package
------------------------------------
1. Implement `SwitchView` (view.py) over the failover state machine:
       snapshot() -> SwitchSnapshot
       changes() -> AsyncIterator[SwitchSnapshot]   # current snapshot first, then every change
       async request_failback() -> None             # raise proxy.errors.Conflict to refuse
2. Parse the `[pages]` TOML table with `PagesConfig.from_mapping(table)` (raises ConfigError naming
   the key).
3. Before adding the catch-all forwarding route, call
       setup_pages(app, view, config, templates_dir, static_dir)
   which registers /__dumont/{static/<name>, events, strings, transition, tips/<id>/click, failback}
   and ends the event streams on app shutdown. The app needs proxy.boundary.error_boundary, since
   the handlers raise NotFound / Forbidden / Conflict.
4. For a request that finds no backend ready: if `is_navigation(request)`, answer
       render_transition(request, view)            # 503, Retry-After, no-store, strict CSP
   and otherwise a short 503 (never the HTML to fetch, XHR or WebSocket requests).
5. If `config.watcher`: for each backend response, when `wants_watcher(status, method, headers)`
   is true, buffer the body and call `inject_watcher(status, method, headers, body)`; forward its
   (headers, body) when it returns them, else the original response untouched.
6. /__dumont/status and metrics read tip counts from `app[PAGES].tip_book.snapshot()`.
"""

from __future__ import annotations

from .config import DEFAULT_TIP, PagesConfig, Tip
from .i18n import choose_language, strings_for
from .inject import MAX_DOCUMENT_BYTES, WATCHER_SRC, WATCHER_TAG, inject_watcher, wants_watcher
from .routes import (
    PREFIX,
    cross_origin_problem,
    is_navigation,
    is_navigation_of,
    render_transition,
    setup_pages,
)
from .state import PAGES, PagesState
from .tips import TIP_COOKIE, TipBook, TipCounts
from .view import SwitchSnapshot, SwitchState, SwitchView

__all__ = [
    "DEFAULT_TIP",
    "MAX_DOCUMENT_BYTES",
    "PAGES",
    "PREFIX",
    "TIP_COOKIE",
    "WATCHER_SRC",
    "WATCHER_TAG",
    "PagesConfig",
    "PagesState",
    "SwitchSnapshot",
    "SwitchState",
    "SwitchView",
    "Tip",
    "TipBook",
    "TipCounts",
    "choose_language",
    "cross_origin_problem",
    "inject_watcher",
    "is_navigation",
    "is_navigation_of",
    "render_transition",
    "setup_pages",
    "strings_for",
    "wants_watcher",
]
