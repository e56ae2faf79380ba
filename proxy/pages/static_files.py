"""The transition page's and the watcher's static files, from a fixed list.

Only the names in STATIC_FILES are served: no directory listing, no path from the URL ever reaches
the file system. The files are read once at start-up, so a missing file stops the proxy at once
instead of breaking a page in the middle of a failover, when nobody can fix it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from proxy.errors import NotFound

__all__ = ["STATIC_FILES", "StaticFile", "load_static", "serve_static"]

STATIC_FILES: dict[str, str] = {
    "transition.css": "text/css; charset=utf-8",
    "transition.js": "text/javascript; charset=utf-8",
    "watcher.css": "text/css; charset=utf-8",
    "watcher.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static(static_dir: Path) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for name, content_type in STATIC_FILES.items():
        body = (static_dir / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[name] = StaticFile(body, content_type, etag)
    return files


def serve_static(request: web.Request, files: dict[str, StaticFile]) -> web.Response:
    found = files.get(request.match_info["name"])
    if found is None:
        raise NotFound("no such static file")
    headers = {
        # Revalidate every time: after an upgrade, an open IDE must get the new watcher, and a
        # revalidation costs one 304.
        hdrs.CACHE_CONTROL: "no-cache",
        hdrs.ETAG: found.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if found.etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, hdrs.CONTENT_TYPE: found.content_type})
