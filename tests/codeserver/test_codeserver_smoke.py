"""A real code-server 4.139: the workbench edits a file in Chromium, and the HTTP facts that the
proxy and its watcher injector rely on (docs/CODE-SERVER.md) still hold."""

from __future__ import annotations

import asyncio
import gzip
import http.cookiejar
import json
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli  # type: ignore[import-untyped]  # brotli ships no type information
import pytest
from multidict import CIMultiDict
from playwright.async_api import Route

from proxy.pages import SwitchSnapshot
from proxy.pages.inject import WATCHER_TAG, inject_watcher
from tests.support.browser import chromium, open_workbench
from tests.support.codeserver import CodeServer, running_code_server

pytestmark = [pytest.mark.codeserver, pytest.mark.slow]

PASSWORD = "smoke-test-password"
STATIC = Path(__file__).resolve().parents[2] / "static"


@pytest.fixture(scope="module")
def code_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodeServer]:
    base = tmp_path_factory.mktemp("code-server")
    workspace = base / "workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("first line\n")
    with running_code_server(base, PASSWORD, workspace=workspace) as server:
        print(f"code-server healthy {server.started_in:.2f} s after spawn")
        yield server


@pytest.fixture(scope="module")
def logged_in(code_server: CodeServer) -> urllib.request.OpenerDirector:
    """An HTTP client holding code-server's session cookie, like a browser after the login form."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    form = urllib.parse.urlencode({"password": PASSWORD}).encode()
    # code-server refuses a login whose Origin host differs from the request's Host.
    login = urllib.request.Request(
        f"{code_server.url}/login", data=form, headers={"Origin": code_server.url}
    )
    with opener.open(login) as response:
        assert response.status == 200  # after following the redirect into the workbench
    return opener


def fetch_workbench(
    opener: urllib.request.OpenerDirector, server: CodeServer, accept_encoding: str
) -> tuple[CIMultiDict[str], bytes]:
    request = urllib.request.Request(
        f"{server.url}/?folder={urllib.parse.quote(str(server.workspace))}",
        headers={"Accept": "text/html", "Accept-Encoding": accept_encoding},
    )
    with opener.open(request) as response:
        assert response.status == 200
        return CIMultiDict(response.headers.items()), response.read()


def test_healthz_answers_without_a_session(code_server: CodeServer) -> None:
    with urllib.request.urlopen(f"{code_server.url}/healthz") as response:
        assert response.status == 200
        assert b'"status"' in response.read()


def test_workbench_csp_allows_same_origin_scripts(
    code_server: CodeServer, logged_in: urllib.request.OpenerDirector
) -> None:
    headers, body = fetch_workbench(logged_in, code_server, "identity")
    assert headers["Content-Type"].startswith("text/html")
    script_src = next(
        part.split()
        for part in headers["Content-Security-Policy"].split(";")
        if part.split()[:1] == ["script-src"]
    )
    # Without 'strict-dynamic', 'self' still admits <script src="/__dumont/..."> next to the nonce.
    assert "'self'" in script_src
    assert "'strict-dynamic'" not in script_src
    assert body.count(b"</head>") == 1


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [("gzip, deflate, br", "br"), ("gzip, deflate", "gzip"), ("deflate", "deflate"), ("", None)],
)
def test_workbench_compression_and_the_injector_handles_it(
    code_server: CodeServer,
    logged_in: urllib.request.OpenerDirector,
    offered: str,
    chosen: str | None,
) -> None:
    headers, body = fetch_workbench(logged_in, code_server, offered)
    assert headers.get("Content-Encoding") == chosen
    # Streamed (chunked), so the injector must add a Content-Length rather than fix one.
    assert "Content-Length" not in headers
    result = inject_watcher(200, "GET", headers, body)
    assert result is not None
    new_headers, new_body = result
    assert int(new_headers["Content-Length"]) == len(new_body)
    _, plain = fetch_workbench(logged_in, code_server, "identity")
    assert _decoded(new_headers.get("Content-Encoding"), new_body).count(WATCHER_TAG) == 1
    assert len(_decoded(chosen, body)) == len(plain)


def _decoded(encoding: str | None, body: bytes) -> bytes:
    if encoding == "br":
        return bytes(brotli.decompress(body))
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


@pytest.mark.browser
async def test_workbench_runs_the_watcher_and_edits_a_file(code_server: CodeServer) -> None:
    """The real workbench's CSP lets our same-origin watcher run, and the IDE still opens, edits
    and saves with the watcher in it.

    The watcher is added to the live workbench as a script element with the same src as the
    injected tag: CSP 'self' (without 'strict-dynamic') treats both the same. Rewriting the
    document itself with Playwright's route.fulfill() is no option: the workbench's WebSocket
    then fails with 1006, with or without our script (docs/CODE-SERVER.md)."""
    notes: Path = code_server.workspace / "notes.txt"
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.route(f"{code_server.url}/__dumont/**", _pages_stand_in)
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Security" in m.text else None)
        began = time.monotonic()
        await open_workbench(page, code_server.url, PASSWORD)
        print(f"workbench usable {time.monotonic() - began:.2f} s after navigation")
        await page.evaluate(
            """() => new Promise((loaded, failed) => {
                const script = document.createElement("script");
                script.src = "/__dumont/static/watcher.js";
                script.onload = loaded;
                script.onerror = () => failed(new Error("the watcher did not load"));
                document.head.appendChild(script);
            })"""
        )
        assert await page.evaluate("window.__dumontWatcher === true")
        assert refused == []
        await page.click('.explorer-folders-view .monaco-list-row[aria-label^="notes.txt"]')
        editor = page.locator(".editor-instance .monaco-editor .view-lines")
        await editor.wait_for(state="visible")
        await editor.click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type("typed by chromium\n")
        # On a loaded 2-core machine the editor lags behind the keyboard: save what it shows.
        await editor.get_by_text("typed by chromium").wait_for(timeout=60_000)
        await page.keyboard.press("Control+S")
        deadline = time.monotonic() + 60
        while "chromium" not in await asyncio.to_thread(notes.read_text):
            assert time.monotonic() < deadline, "the editor never saved the file"
            await page.wait_for_timeout(100)
        # One event from the stand-in said "still the same machine": no overlay, no reload.
        assert await page.locator(".dumont-watcher-overlay").count() == 0
    assert await asyncio.to_thread(notes.read_text) == "first line\ntyped by chromium\n"


async def _pages_stand_in(route: Route) -> None:
    """The /__dumont/ resources the watcher loads first: its files, and one event."""
    name = route.request.url.rsplit("/", 1)[1]
    if name == "events":
        snapshot = SwitchSnapshot(0, "serving_primary", "primary", None, True, True, False)
        event = f"data: {json.dumps(snapshot.as_json())}\n\n"
        await route.fulfill(status=200, content_type="text/event-stream", body=event)
    elif name in {"watcher.js", "watcher.css"}:
        await route.fulfill(status=200, path=STATIC / name)
    else:
        await route.fulfill(status=404)
