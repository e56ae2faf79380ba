"""An aiohttp app with the pages set up over a fake view, as the proxy core will set them up."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.boundary import error_boundary
from proxy.pages import PagesConfig, render_transition, setup_pages
from tests.pages.fake_view import FakeSwitchView

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
STATIC = REPO / "static"

IDE_MARKER = "the IDE document"


def make_app(
    view: FakeSwitchView, config: PagesConfig, *, keepalive: float = 15.0
) -> web.Application:
    """The pages plus a stand-in for the core's catch-all: the transition page while nothing is
    ready, else a small "IDE" document carrying the watcher's tag."""
    app = web.Application(middlewares=[error_boundary])
    setup_pages(
        app, view, config, TEMPLATES, STATIC, keepalive_interval=keepalive, rng=random.Random(7)
    )

    async def catch_all(request: web.Request) -> web.StreamResponse:
        if not view.snapshot().ready:
            return render_transition(request, view)
        active = view.snapshot().active
        return web.Response(
            text=(
                "<!DOCTYPE html><html><head><title>ide</title>"
                '<script src="/__dumont/static/watcher.js" defer></script></head>'
                f'<body><p id="ide">{IDE_MARKER} on {active}</p></body></html>'
            ),
            content_type="text/html",
        )

    app.router.add_route("*", "/{tail:.*}", catch_all)
    return app


ClientMaker = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def view() -> FakeSwitchView:
    return FakeSwitchView()


@pytest.fixture
async def pages_client(
    aiohttp_client: ClientMaker, view: FakeSwitchView
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(make_app(view, PagesConfig()))
