"""A repository in a Google Cloud Storage bucket, through the JSON API and httpx.

Objects are written with resumable uploads: POST .../o?uploadType=resumable&name=... returns a
session URI in Location; the object goes up in 8 MiB PUTs with ``Content-Range: bytes a-b/total``,
each answered 308 (with ``Range: bytes=0-n``, what the server holds) until the last is answered
200/201. When a PUT fails (connection dropped, 5xx, 429), the client asks the server what it holds
(``Content-Range: bytes */total``) and resumes from there instead of starting over.

The session URI authorises writes to the object by itself, like a token: it is never put in an
error message, and the "httpx" logger is filtered so that it never reaches a log either. The
access token only ever travels in the Authorization header.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from provisioning.retry import RetryPolicy
from provisioning.snapshot.errors import DestinationError, UploadError
from provisioning.snapshot.stores.base import IteratorReader, Payload, ReadStream, joined

__all__ = ["GCS_RETRY", "GcsStore", "default_token_provider"]

UPLOAD_CHUNK = 8 << 20  # a multiple of 256 KiB, as resumable uploads require
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
# Seven tries: a resumable upload picks up where the server stopped, so a retry is cheap and a
# bucket's 429s and 503s come in bursts that a few seconds outlast.
GCS_RETRY = RetryPolicy(attempts=7)
_READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
_SECRET_QUERY = re.compile(r"(upload_id|access_token)=[^&\s\"']+")


class _RedactSessions(logging.Filter):
    """httpx logs every request URL at INFO; a resumable session URL is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _SECRET_QUERY.search(message):
            record.msg = _SECRET_QUERY.sub(r"\1=<redacted>", message)
            record.args = ()
        return True


# A logger's filters see only records logged to it, not those its children pass up: name each
# logger httpx and httpcore log to (httpcore's DEBUG traces print response headers: Location).
for _logger_name in (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.connection_pool",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
):
    logging.getLogger(_logger_name).addFilter(_RedactSessions())


def default_token_provider() -> Callable[[], str]:
    """Application default credentials (metadata server, GOOGLE_APPLICATION_CREDENTIALS)."""
    import google.auth
    import google.auth.transport.requests

    credentials, _project = google.auth.default(scopes=[_READ_WRITE_SCOPE])
    lock = threading.Lock()

    def token() -> str:
        with lock:
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
            return str(credentials.token)

    return token


_DONE = -1


class _Retry(Exception):
    """A response or connection failure worth asking again about."""


class _Rejected(Exception):
    """The server refused the upload for good (a 4xx other than 408/429)."""


class GcsStore:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str,
        token_provider: Callable[[], str] | None,
        retry: RetryPolicy = GCS_RETRY,
        timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint = endpoint.rstrip("/")
        self._token = token_provider
        self._retry = retry
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}" if self.prefix else f"gs://{self.bucket}"

    def _object(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        return headers

    def _pause(self, failures: int) -> None:
        time.sleep(self._retry.delay(failures))

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries on connection errors and retryable statuses."""
        failures = 0
        while True:
            try:
                response = self._client.request(method, url, headers=self._headers(), **kwargs)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}"
            else:
                if response.status_code not in _RETRYABLE:
                    return response
                failure = f"HTTP {response.status_code}"
            failures += 1
            if self._retry.exhausted(failures):
                break
            self._pause(failures)
        raise DestinationError(f"{self.describe()}: {what} failed: {failure}")

    def check_writable(self) -> None:
        probe = ".write-probe"
        self.put(probe, b"")
        self.delete([probe])

    def put(self, name: str, payload: Payload) -> None:
        data = joined(payload)
        session = self._start_upload(name, len(data))
        offset = 0
        failures = 0
        ask_server = False
        while True:
            try:
                if ask_server:
                    offset = self._committed(session, len(data))
                    if offset == _DONE:
                        return
                self._send_from(session, data, offset)
                return
            except _Retry as exc:
                failures += 1
                if self._retry.exhausted(failures):
                    raise UploadError(
                        f"{self.describe()}: upload of {name} failed after {failures} tries: {exc}"
                    ) from None
                self._pause(failures)
                ask_server = True
            except _Rejected as exc:
                raise UploadError(f"{self.describe()}: upload of {name} rejected: {exc}") from None

    def _start_upload(self, name: str, size: int) -> str:
        url = f"{self._endpoint}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        headers = {
            "X-Upload-Content-Length": str(size),
            "X-Upload-Content-Type": "application/octet-stream",
        }
        failures = 0
        while True:
            try:
                response = self._client.post(
                    url,
                    params={"uploadType": "resumable", "name": self._object(name)},
                    headers=self._headers(headers),
                    json={"name": self._object(name)},
                )
            except httpx.TransportError:
                status = "connection failed"
            else:
                location = str(response.headers.get("location", ""))
                if response.status_code == 200 and location:
                    return location
                status = f"HTTP {response.status_code}"
                if response.status_code not in _RETRYABLE:
                    break
            failures += 1
            if self._retry.exhausted(failures):
                break
            self._pause(failures)
        raise UploadError(f"{self.describe()}: starting upload of {name} failed: {status}")

    def _send_from(self, session: str, data: bytes, offset: int) -> None:
        """PUT chunks from ``offset`` until the server answers that the object exists."""
        total = len(data)
        while True:
            end = min(offset + UPLOAD_CHUNK, total)
            if end > offset:
                content_range = f"bytes {offset}-{end - 1}/{total}"
            else:
                content_range = f"bytes */{total}"
            response = self._put_session(session, data[offset:end], content_range)
            if response.status_code == 308:
                offset = _committed_end(response)
            elif response.status_code in (200, 201):
                return
            else:
                raise _Rejected(f"HTTP {response.status_code}")

    def _committed(self, session: str, total: int) -> int:
        """Ask the server how much of the object it holds (_DONE: the upload completed)."""
        response = self._put_session(session, b"", f"bytes */{total}")
        if response.status_code in (200, 201):
            return _DONE
        if response.status_code == 308:
            return _committed_end(response)
        raise _Rejected(f"cannot resume: HTTP {response.status_code}")

    def _put_session(self, session: str, body: bytes, content_range: str) -> httpx.Response:
        try:
            response = self._client.put(
                session, content=body, headers=self._headers({"Content-Range": content_range})
            )
        except httpx.TransportError as exc:
            raise _Retry(type(exc).__name__) from None
        if response.status_code in _RETRYABLE:
            raise _Retry(f"HTTP {response.status_code}")
        return response

    def _media_url(self, name: str) -> str:
        bucket = quote(self.bucket, safe="")
        return f"{self._endpoint}/storage/v1/b/{bucket}/o/{quote(self._object(name), safe='')}"

    def get(self, name: str) -> bytes:
        response = self._request(
            "GET", self._media_url(name), f"reading {name}", params={"alt": "media"}
        )
        if response.status_code != 200:
            raise DestinationError(
                f"{self.describe()}: cannot read {name}: HTTP {response.status_code}"
            )
        return response.content

    @contextlib.contextmanager
    def open_stream(self, name: str) -> Iterator[ReadStream]:
        body = self._download(name)
        try:
            yield IteratorReader(body)
        finally:
            body.close()

    def _download(self, name: str) -> Generator[bytes, None, None]:
        """The object's bytes; a download that breaks resumes with a Range request."""
        received = 0
        failures = 0
        while True:
            extra = {"Range": f"bytes={received}-"} if received else {}
            request = self._client.build_request(
                "GET", self._media_url(name), params={"alt": "media"}, headers=self._headers(extra)
            )
            try:
                response = self._client.send(request, stream=True)
                try:
                    expected = 206 if received else 200
                    if response.status_code == expected:
                        for part in response.iter_raw(1 << 20):
                            received += len(part)
                            yield part
                        return
                    if response.status_code not in _RETRYABLE:
                        raise DestinationError(
                            f"{self.describe()}: cannot read {name}: HTTP {response.status_code}"
                        )
                    failure = f"HTTP {response.status_code}"
                finally:
                    response.close()
            except httpx.TransportError as exc:
                failure = type(exc).__name__
            failures += 1
            if self._retry.exhausted(failures):
                raise DestinationError(f"{self.describe()}: reading {name} failed: {failure}")
            self._pause(failures)

    def list(self, prefix: str) -> list[str]:
        url = f"{self._endpoint}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        lead = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        page: str | None = None
        while True:
            params = {"prefix": lead + prefix, "fields": "items(name),nextPageToken"}
            if page:
                params["pageToken"] = page
            response = self._request("GET", url, "listing", params=params)
            if response.status_code != 200:
                raise DestinationError(
                    f"{self.describe()}: listing failed: HTTP {response.status_code}"
                )
            document = response.json()
            names.extend(item["name"].removeprefix(lead) for item in document.get("items", []))
            page = document.get("nextPageToken")
            if not page:
                return sorted(names)

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            response = self._request("DELETE", self._media_url(name), f"deleting {name}")
            if response.status_code not in (200, 204, 404):
                raise DestinationError(
                    f"{self.describe()}: deleting {name} failed: HTTP {response.status_code}"
                )

    def close(self) -> None:
        self._client.close()


def _committed_end(response: httpx.Response) -> int:
    """The next byte to send after a 308: no Range header means the server holds nothing."""
    held = response.headers.get("range")
    if not held:
        return 0
    return int(held.rpartition("-")[2]) + 1
