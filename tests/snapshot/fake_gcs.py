"""A local stand-in for the Google Cloud Storage JSON API: only what the snapshot store uses.

It follows the documented wire format: resumable uploads (POST .../upload/storage/v1/b/B/o
?uploadType=resumable&name=N answering a session URI in Location; PUT chunks with
``Content-Range: bytes a-b/total``, each a multiple of 256 KiB but the last, answered 308 with
``Range: bytes=0-n`` until the object is complete and answered 200; ``Content-Range: bytes */total``
asks for the upload's status), media downloads (GET .../o/NAME?alt=media), listing with prefix and
pageToken, and DELETE. ``faults`` lets a test break chunk uploads in the ways real networks do.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeGcs", "Fault", "serve_fake_gcs"]

GRANULARITY = 256 * 1024
PAGE_SIZE = 7  # small, so that listing's pagination is exercised by every test

# "drop": keep the first half of the chunk (rounded down to 256 KiB) and close the connection
# without an answer; "503": keep nothing, answer 503; "partial": keep half, answer 308 honestly.
Fault = Literal["drop", "503", "partial"]
_RANGE = re.compile(r"bytes (\*|(\d+)-(\d+))/(\d+|\*)")


@dataclass
class _Session:
    name: str
    total: int | None
    data: bytearray = field(default_factory=bytearray)
    done: bool = False


@dataclass
class FakeGcs:
    bucket: str = "dumont-snapshots"
    endpoint: str = ""
    objects: dict[str, bytes] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    # Media downloads of more than 64 KiB (packs) to break: half the body announced, then hang up.
    download_drops: int = 0
    ranged_downloads: int = 0
    chunk_puts: int = 0
    status_queries: int = 0
    bytes_received: int = 0
    authorizations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeGcs

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest captures stderr, and the tests assert on state instead."""

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _split(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path.split("/"), parse_qs(parts.query)

    def _authorize(self) -> None:
        if "Authorization" in self.headers:
            with self.fake.lock:
                self.fake.authorizations.add(self.headers["Authorization"])

    def do_POST(self) -> None:
        self._authorize()
        segments, query = self._split()
        self._body()
        # /upload/storage/v1/b/{bucket}/o
        if segments[1:5] != ["upload", "storage", "v1", "b"] or query.get("uploadType") != [
            "resumable"
        ]:
            self._answer(400)
            return
        if unquote(segments[5]) != self.fake.bucket:
            self._answer(404)
            return
        name = query["name"][0]
        declared = self.headers.get("X-Upload-Content-Length")
        upload_id = secrets.token_urlsafe(24)
        with self.fake.lock:
            self.fake.sessions[upload_id] = _Session(name, int(declared) if declared else None)
        location = (
            f"{self.fake.endpoint}/upload/storage/v1/b/{quote(self.fake.bucket)}/o"
            f"?uploadType=resumable&name={quote(name)}&upload_id={upload_id}"
        )
        self._answer(200, b"", {"Location": location})

    def _progress(self, session: _Session) -> dict[str, str]:
        return {"Range": f"bytes=0-{len(session.data) - 1}"} if session.data else {}

    def do_PUT(self) -> None:
        self._authorize()
        _segments, query = self._split()
        body = self._body()
        session = self.fake.sessions.get(query.get("upload_id", [""])[0])
        if session is None:
            self._answer(404)
            return
        match = _RANGE.fullmatch(self.headers.get("Content-Range", ""))
        if match is None:
            self._answer(400)
            return
        total = None if match.group(4) == "*" else int(match.group(4))
        if match.group(1) == "*":
            self._status(session, total)
            return
        self._chunk(session, int(match.group(2)), int(match.group(3)), total, body)

    def _status(self, session: _Session, total: int | None) -> None:
        with self.fake.lock:
            self.fake.status_queries += 1
            if total is not None and not session.done and len(session.data) == total:
                self._finish(session)
        if session.done:
            self._answer(200, json.dumps({"name": session.name}).encode())
        else:
            self._answer(308, b"", self._progress(session))

    def _finish(self, session: _Session) -> None:
        session.done = True
        self.fake.objects[session.name] = bytes(session.data)

    def _chunk(
        self, session: _Session, first: int, last: int, total: int | None, body: bytes
    ) -> None:
        if len(body) != last - first + 1 or first > len(session.data):
            self._answer(400)
            return
        final = total is not None and last + 1 == total
        if not final and len(body) % GRANULARITY:
            self._answer(400, b"chunk size must be a multiple of 256 KiB")
            return
        with self.fake.lock:
            self.fake.chunk_puts += 1
            self.fake.bytes_received += len(body)
            fault = self.fake.faults.pop(0) if self.fake.faults else None
            keep = len(body) if fault is None else (len(body) // 2) // GRANULARITY * GRANULARITY
            if fault == "503":
                keep = 0
            new = body[len(session.data) - first : keep]
            session.data += new
            if total is not None and len(session.data) == total:
                self._finish(session)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "503":
            self._answer(503, b"backend error")
        elif session.done:
            self._answer(200, json.dumps({"name": session.name}).encode())
        else:
            self._answer(308, b"", self._progress(session))

    def do_GET(self) -> None:
        self._authorize()
        segments, query = self._split()
        # /storage/v1/b/{bucket}/o[/{object}]
        if segments[1:4] != ["storage", "v1", "b"] or unquote(segments[4]) != self.fake.bucket:
            self._answer(404)
            return
        if len(segments) == 6:
            self._list(query)
            return
        name = unquote("/".join(segments[6:]))
        data = self.fake.objects.get(name)
        if data is None or query.get("alt") != ["media"]:
            self._answer(404)
            return
        status, start = 200, 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked:
            status, start = 206, int(asked.group(1))
            with self.fake.lock:
                self.fake.ranged_downloads += 1
        body = data[start:]
        with self.fake.lock:
            drop = self.fake.download_drops > 0 and len(body) > 64 * 1024
            self.fake.download_drops -= drop
        if drop:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._answer(status, body, {"Content-Type": "application/octet-stream"})

    def _list(self, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        start = int(query.get("pageToken", ["0"])[0])
        with self.fake.lock:
            names = sorted(name for name in self.fake.objects if name.startswith(prefix))
        page = names[start : start + PAGE_SIZE]
        document: dict[str, object] = {
            "kind": "storage#objects",
            "items": [{"name": n} for n in page],
        }
        if start + PAGE_SIZE < len(names):
            document["nextPageToken"] = str(start + PAGE_SIZE)
        self._answer(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def do_DELETE(self) -> None:
        self._authorize()
        segments, _query = self._split()
        name = unquote("/".join(segments[6:]))
        with self.fake.lock:
            existed = self.fake.objects.pop(name, None) is not None
        self._answer(204 if existed else 404)


def serve_fake_gcs() -> tuple[ThreadingHTTPServer, FakeGcs]:
    fake = FakeGcs()
    handler = type("FakeGcsHandler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return server, fake
