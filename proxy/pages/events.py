"""GET /__dumont/events: the failover as server-sent events, for the transition page and watcher.

Each event's data is one SwitchSnapshot as JSON (SwitchSnapshot.as_json); the first is the current
state, sent as soon as the stream opens. A comment line every keep-alive interval (15 s) keeps
intermediaries from timing the stream out and lets us notice browsers that went away. On shutdown
every stream ends with a clean end of body, and the browsers' EventSource reconnects to whichever
proxy comes up next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import hdrs, web

from .state import PAGES
from .view import SwitchSnapshot, SwitchView

__all__ = ["end_streams", "stream_events"]

# Tells EventSource to reconnect one second after a dropped stream (the scripts add their own
# backoff when the proxy stays away).
_PREAMBLE = b"retry: 1000\n\n"
_KEEPALIVE = b": keep-alive\n\n"


async def stream_events(request: web.Request) -> web.StreamResponse:
    pages = request.app[PAGES]
    queue: asyncio.Queue[SwitchSnapshot | None] = asyncio.Queue()
    pages.streams.add(queue)
    pump = pages.tasks.spawn(_pump(pages.view_for(request), queue), name="events-pump")
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
            hdrs.CACHE_CONTROL: "no-store",
            # nginx in front of us must not buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await response.write(_PREAMBLE)
        while (snapshot := await _next(queue, pages.keepalive_interval, response)) is not None:
            await response.write(_event(snapshot))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the browser closed the tab or navigated away
    finally:
        pages.streams.discard(queue)
        # The TaskSet keeps a reference until the pump has unwound (and the view unsubscribed).
        pump.cancel()
    return response


async def end_streams(app: web.Application) -> None:
    """on_shutdown: let every open stream finish its body instead of being cut."""
    for queue in app[PAGES].streams:
        queue.put_nowait(None)


async def _next(
    queue: asyncio.Queue[SwitchSnapshot | None], keepalive: float, response: web.StreamResponse
) -> SwitchSnapshot | None:
    """The next snapshot, or None when the stream must end; writes keep-alives while waiting."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(keepalive):
                return await queue.get()
        await response.write(_KEEPALIVE)


async def _pump(view: SwitchView, queue: asyncio.Queue[SwitchSnapshot | None]) -> None:
    try:
        async for snapshot in view.changes():
            queue.put_nowait(snapshot)
    finally:
        # The view ended or failed (the TaskSet logs why): end the stream, and the browser
        # reconnects, rather than keeping it open with nothing behind it.
        queue.put_nowait(None)


def _event(snapshot: SwitchSnapshot) -> bytes:
    return b"data: " + json.dumps(snapshot.as_json(), separators=(",", ":")).encode() + b"\n\n"
