"""One browser's two workbench loads, run inside the far namespace by bench/far.py (issue 19).

    ip netns exec NS python -m peers.workbench_load --url URL --marker NAME --profile DIR \\
        --spki HASH --stats SOCK --target ADDR:PORT

Debian's Chromium (Playwright, headless) with a fresh profile loads the workbench (cold), waits
for the page to settle (no request for ``--settle`` seconds), then reloads it in the same tab
(warm: the disk cache and the kept-alive connections of the cold load, as after a failover's
reload). A load's time runs from the navigation's start (the new document's
``performance.timeOrigin``) until the explorer shows ``--marker``, a file of the workspace
folder: an init script's MutationObserver stamps the moment with ``performance.now()``, so
Playwright's polling adds nothing to it.

Per load it prints (one JSON object on stdout): the time, the TCP connections the browser opened to
``--target`` meanwhile (SYNs the delayed link counted), the document's protocol and TLS version,
each WebSocket's handshake status (101: its own HTTP/1.1 connection; 200: inside HTTP/2, RFC
8441), and how many responses came from the disk cache.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, CDPSession, Page, async_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

__all__ = ["main"]

_STAMP = """
(() => {
  const marker = %s;
  const rows = '.explorer-folders-view .monaco-list-row';
  const seen = () => {
    for (const row of document.querySelectorAll(rows)) {
      if (row.textContent.includes(marker)) return true;
    }
    return false;
  };
  const observer = new MutationObserver(() => {
    if (window.farShownAt === undefined && seen()) {
      window.farShownAt = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, {childList: true, subtree: true, characterData: true});
})();
"""


def _syns(stats: Path, target: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(stats))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    counts: dict[str, int] = json.loads(data)["syns"]
    return counts.get(target, 0)


class _Network:
    """What Chromium's DevTools protocol reports of one load's responses and WebSockets."""

    def __init__(self) -> None:
        self.in_flight: dict[str, str] = {}  # request id -> URL
        self.last_activity = time.monotonic()
        self.reset()

    def reset(self) -> None:
        self.document: dict[str, Any] = {}
        self.protocols: dict[str, int] = {}
        self.from_cache = 0
        self.responses = 0
        self.websockets: list[int] = []
        self.log: list[str] = []

    def on_request(self, event: Mapping[str, Any]) -> None:
        url = event["request"]["url"]
        # Workers' blob: URLs never report an end, nor does our watcher's event stream: neither
        # is loading the page.
        if url.startswith("http") and event.get("type") != "EventSource":
            self.in_flight[event["requestId"]] = url[-80:]
        self.last_activity = time.monotonic()

    def on_request_done(self, event: Mapping[str, Any]) -> None:
        self.in_flight.pop(event["requestId"], None)
        self.last_activity = time.monotonic()

    async def quiet(self, page: Page, quiet_s: float, cap_s: float) -> dict[str, Any]:
        """Until no request has been in flight for ``quiet_s`` (at most ``cap_s``): the cold page
        goes on loading after the explorer shows (grammars, themes, extensions), and a reload in
        the middle of that would measure it too."""
        started = time.monotonic()
        while time.monotonic() < started + cap_s:
            if not self.in_flight and time.monotonic() - self.last_activity >= quiet_s:
                break
            await page.wait_for_timeout(100)
        return {
            "settle_seconds": time.monotonic() - started,
            "in_flight": list(self.in_flight.values()),
        }

    def on_response(self, event: Mapping[str, Any]) -> None:
        response = event["response"]
        self.responses += 1
        cached = bool(response.get("fromDiskCache") or response.get("fromPrefetchCache"))
        # HTTP/2's header names are lower case, HTTP/1.1's as the server wrote them.
        headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
        control = headers.get("cache-control", "-")
        self.log.append(f"{response.get('status')} {'cache' if cached else 'net'} {control} "
                        f"{response.get('url', '')[-80:]}")  # fmt: skip
        if cached:
            self.from_cache += 1
            return
        protocol = response.get("protocol", "?")
        if protocol == "data":  # a data: URL, nothing on the wire
            return
        self.protocols[protocol] = self.protocols.get(protocol, 0) + 1
        if event.get("type") == "Document" and not self.document:
            tls = response.get("securityDetails", {}).get("protocol", "none")
            self.document = {"protocol": protocol, "tls": tls, "status": response.get("status")}

    def on_websocket(self, event: Mapping[str, Any]) -> None:
        self.websockets.append(int(event["response"]["status"]))

    def summary(self) -> dict[str, Any]:
        return {
            **self.document,
            "protocols": dict(self.protocols),  # copies: the page goes on after the load
            "responses": self.responses,
            "from_cache": self.from_cache,
            "websockets": list(self.websockets),
            "responses_seen": list(self.log),
        }


async def _load(
    page: Page,
    network: _Network,
    navigate: Callable[[], Awaitable[object]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    network.reset()
    syns_before = _syns(args.stats, args.target)
    started = time.monotonic()
    await navigate()
    handle = await page.wait_for_function(
        "() => window.farShownAt", timeout=args.timeout * 1000, polling=50
    )
    shown_ms = float(await handle.json_value())
    wall_s = time.monotonic() - started
    return {
        "seconds": shown_ms / 1000,
        "wall_seconds": wall_s,  # the same, seen from Playwright: a cross-check
        "connections": _syns(args.stats, args.target) - syns_before,
        **network.summary(),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    flags = [
        *CHROMIUM_ARGS,
        "--ignore-certificate-errors",
        f"--ignore-certificate-errors-spki-list={args.spki}",
    ]
    async with async_playwright() as playwright:
        context: BrowserContext = await playwright.chromium.launch_persistent_context(
            str(args.profile), executable_path=str(CHROMIUM), args=flags, headless=True,
            viewport={"width": 1280, "height": 800}, ignore_https_errors=True,
        )  # fmt: skip
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.add_init_script(_STAMP % json.dumps(args.marker))
            network = _Network()
            cdp: CDPSession = await context.new_cdp_session(page)
            cdp.on("Network.responseReceived", network.on_response)
            cdp.on("Network.webSocketHandshakeResponseReceived", network.on_websocket)
            cdp.on("Network.requestWillBeSent", network.on_request)
            cdp.on("Network.loadingFinished", network.on_request_done)
            cdp.on("Network.loadingFailed", network.on_request_done)
            await cdp.send("Network.enable")
            cold = await _load(
                page, network, lambda: page.goto(args.url, wait_until="commit"), args
            )
            settled = await network.quiet(page, args.settle, cap_s=60)
            reload = functools.partial(page.reload, wait_until="commit")
            warm = await _load(page, network, reload, args)
            return {"cold": cold, "settled": settled, "warm": warm}
        finally:
            await context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--marker", required=True, help="a file name the explorer must show")
    parser.add_argument("--profile", type=Path, required=True, help="a fresh directory")
    parser.add_argument("--spki", required=True, help="the certificate's SPKI SHA-256, base64")
    parser.add_argument("--stats", type=Path, required=True, help="the delayed link's socket")
    parser.add_argument("--target", required=True, help="ADDR:PORT whose SYNs are counted")
    parser.add_argument("--settle", type=float, default=2.0, help="quiet seconds before warm")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))), flush=True)


if __name__ == "__main__":
    main()
