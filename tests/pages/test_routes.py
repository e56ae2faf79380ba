"""The pages' routes on a real aiohttp server, over a fake SwitchView."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.pages import PAGES, PagesConfig, SwitchSnapshot, TipCounts, is_navigation
from proxy.pages.static_files import STATIC_FILES
from tests.pages.conftest import ClientMaker, make_app
from tests.pages.fake_view import SERVING_PRIMARY, SERVING_STANDBY, SWITCHING, FakeSwitchView

Client = TestClient[web.Request, web.Application]


async def read_event(stream: aiohttp.StreamReader) -> dict[str, object] | str:
    """The next SSE event's data as JSON, or the comment text for a comment block."""
    block = b""
    while not block.endswith(b"\n\n"):
        line = await asyncio.wait_for(stream.readline(), timeout=5)
        assert line, "the stream ended"
        block += line
    if block.startswith(b"retry:"):
        return await read_event(stream)
    if block.startswith(b":"):
        return block.decode().strip(": \n")
    assert block.startswith(b"data: ")
    parsed: dict[str, object] = json.loads(block[6:])
    return parsed


async def test_events_send_the_current_state_then_each_change(
    pages_client: Client, view: FakeSwitchView
) -> None:
    async with pages_client.get("/__dumont/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        first = await read_event(response.content)
        assert first == {**SERVING_PRIMARY.as_json(), "ready": True}
        view.set(SWITCHING)
        second = await read_event(response.content)
        assert isinstance(second, dict)
        assert (second["epoch"], second["state"], second["target"]) == (1, "switching", "standby")
        assert second["ready"] is False


async def test_events_keep_alive_while_nothing_changes(
    aiohttp_client: ClientMaker, view: FakeSwitchView
) -> None:
    client = await aiohttp_client(make_app(view, PagesConfig(), keepalive=0.05))
    async with client.get("/__dumont/events") as response:
        await read_event(response.content)
        assert await read_event(response.content) == "keep-alive"


async def test_events_end_cleanly_on_shutdown_and_unsubscribe(
    aiohttp_client: ClientMaker, view: FakeSwitchView
) -> None:
    client = await aiohttp_client(make_app(view, PagesConfig()))
    response = await client.get("/__dumont/events")
    await read_event(response.content)
    assert view.subscribers == 1
    closing = asyncio.get_running_loop().create_task(client.server.close())
    # A clean end of body, not a reset: EventSource reconnects to the next proxy.
    assert await asyncio.wait_for(response.content.read(), timeout=10) == b""
    await closing
    assert view.subscribers == 0
    response.release()


async def test_static_files_from_the_fixed_list_only(pages_client: Client) -> None:
    for name, content_type in STATIC_FILES.items():
        async with pages_client.get(f"/__dumont/static/{name}") as response:
            assert response.status == 200, name
            assert response.headers["Content-Type"] == content_type
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            etag = response.headers["ETag"]
        async with pages_client.get(
            f"/__dumont/static/{name}", headers={"If-None-Match": etag}
        ) as response:
            assert response.status == 304
    for path in [
        "/__dumont/static/",
        "/__dumont/static/missing.js",
        "/__dumont/static/..%2F..%2Fpyproject.toml",
        "/__dumont/static/%2e%2e%2ftemplates%2ftransition.html",
        "/__dumont/static/transition.html",
        "/__dumont/nothing-here",
    ]:
        async with pages_client.get(path) as response:
            assert response.status == 404, path


async def test_transition_page_speaks_the_browsers_language_and_is_locked_down(
    pages_client: Client, view: FakeSwitchView
) -> None:
    view.set(SWITCHING)
    async with pages_client.get(
        "/__dumont/transition", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"}
    ) as response:
        assert response.status == 200
        html = await response.text()
        headers = response.headers
    assert '<html lang="pt-BR">' in html
    assert "Trocando de máquina…" in html
    assert "Dica profissional" in html
    assert "phase-switching heading-standby" in html
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self';" in csp
    assert "frame-ancestors 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cache-Control"] == "no-store"
    # No inline script: the only <script> elements are the JSON data block and one file.
    assert html.count("<script") == 2
    assert '<script type="application/json" id="dumont-data">' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html


async def test_render_transition_answers_navigations_with_503(
    pages_client: Client, view: FakeSwitchView
) -> None:
    view.set(SWITCHING)
    async with pages_client.get(
        "/some/path?folder=/home/me&x=%3C/script%3E", headers={"Accept": "text/html"}
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert response.headers["Cache-Control"] == "no-store"
        html = await response.text()
    assert "Switching machines…" in html
    data = html.split('id="dumont-data">', 1)[1].split("</script>", 1)[0]
    # Exactly as the browser sent it, so the page goes back to the very same URL.
    assert json.loads(data)["returnPath"] == "/some/path?folder=/home/me&x=%3C/script%3E"


async def test_tip_variant_is_kept_in_a_cookie_and_counted(pages_client: Client) -> None:
    async with pages_client.get("/__dumont/transition") as response:
        cookie = response.cookies["dumont_tip"]
        assert cookie.value == "ollama-llm"
        assert cookie["httponly"]
        assert "Deploy an LLM in 2 min" in await response.text()
    async with pages_client.get("/__dumont/transition") as response:
        assert "dumont_tip" not in response.cookies  # already set: not sent again
    async with pages_client.get("/__dumont/tips/ollama-llm/click", allow_redirects=False) as click:
        assert click.status == 302
        assert click.headers["Location"] == "https://github.com/ollama/ollama"
    async with pages_client.get("/__dumont/tips/nope/click", allow_redirects=False) as click:
        assert click.status == 404
    counts = pages_client.app[PAGES].tip_book.snapshot()
    assert counts == {"ollama-llm": TipCounts(impressions=2, clicks=1)}


async def test_tips_switched_off(aiohttp_client: ClientMaker, view: FakeSwitchView) -> None:
    client = await aiohttp_client(make_app(view, PagesConfig(tips_enabled=False)))
    async with client.get("/__dumont/transition") as response:
        assert "dumont-tip" not in await response.text()
        assert "dumont_tip" not in response.cookies
    async with client.get("/__dumont/tips/ollama-llm/click", allow_redirects=False) as click:
        assert click.status == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "{origin}", "Sec-Fetch-Site": "same-origin"}, 202),
        ({"Origin": "{origin}"}, 202),
        ({"Sec-Fetch-Site": "same-origin"}, 202),
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "{origin}", "Sec-Fetch-Site": "same-site"}, 403),
        ({"Origin": "null"}, 403),
        ({}, 403),
    ],
)
async def test_failback_is_same_origin_only(
    pages_client: Client, view: FakeSwitchView, headers: dict[str, str], status: int
) -> None:
    view.set(SERVING_STANDBY)
    origin = str(pages_client.make_url("")).rstrip("/")
    sent = {name: value.format(origin=origin) for name, value in headers.items()}
    async with pages_client.post("/__dumont/failback", headers=sent) as response:
        assert response.status == status
    assert view.failback_requests == (1 if status == 202 else 0)


async def test_failback_refused_by_the_core_is_a_409(
    pages_client: Client, view: FakeSwitchView
) -> None:
    view.refuse_failback = True
    origin = str(pages_client.make_url("")).rstrip("/")
    async with pages_client.post("/__dumont/failback", headers={"Origin": origin}) as response:
        assert response.status == 409
    async with pages_client.get("/__dumont/failback") as response:
        assert response.status == 405


async def test_strings_for_the_watcher(pages_client: Client) -> None:
    async with pages_client.get("/__dumont/strings", headers={"Accept-Language": "pt"}) as response:
        body = await response.json()
    assert body["language"] == "pt-BR"
    assert body["strings"]["notice.failback"] == "Sua máquina GPU voltou — trocar agora?"


def _request(method: str, headers: dict[str, str]) -> web.Request:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request(method, "/", headers=headers)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}, True),
        ("GET", {"Accept": "text/html,application/xhtml+xml"}, True),
        ("GET", {"Sec-Fetch-Mode": "cors", "Accept": "text/html"}, False),
        ("GET", {"Accept": "application/json"}, False),
        ("GET", {"Accept": "*/*"}, False),
        ("POST", {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}, False),
        ("GET", {"Upgrade": "websocket", "Accept": "text/html"}, False),
    ],
)
def test_is_navigation(method: str, headers: dict[str, str], expected: bool) -> None:
    assert is_navigation(_request(method, headers)) is expected


PARKED = dataclasses.replace(
    SERVING_STANDBY, park={"phase": "parked", "detail": "", "idle_min": None, "park_in_min": None}
)
IDLE = dataclasses.replace(
    SERVING_STANDBY, park={"phase": "idle", "detail": "", "idle_min": 28, "park_in_min": 2}
)


@pytest.mark.parametrize(
    ("path", "snapshot", "counter", "status"),
    [
        ("/__dumont/park/keep", IDLE, "keep_requests", 200),
        ("/__dumont/resume", PARKED, "resume_requests", 202),
        ("/__dumont/park/keep", PARKED, "keep_requests", 409),  # nothing to keep
        ("/__dumont/resume", IDLE, "resume_requests", 409),  # nothing parked
    ],
)
async def test_the_park_buttons_ask_the_proxy_same_origin_only(
    pages_client: Client,
    view: FakeSwitchView,
    path: str,
    snapshot: SwitchSnapshot,
    counter: str,
    status: int,
) -> None:
    view.set(snapshot)
    async with pages_client.post(path, headers={"Origin": "http://evil.example"}) as response:
        assert response.status == 403
    origin = str(pages_client.make_url("")).rstrip("/")
    async with pages_client.post(path, headers={"Origin": origin}) as response:
        assert response.status == status
    assert getattr(view, counter) == (1 if status < 300 else 0)
    async with pages_client.get(path) as response:
        assert response.status == 405


async def test_the_event_stream_carries_the_park_notice(
    pages_client: Client, view: FakeSwitchView
) -> None:
    view.set(PARKED)
    async with pages_client.get("/__dumont/events") as response:
        line = await response.content.readline()
        while not line.startswith(b"data:"):
            line = await response.content.readline()
    assert json.loads(line[5:])["park"]["phase"] == "parked"
