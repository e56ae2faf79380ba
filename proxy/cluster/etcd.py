"""etcd v3, spoken through its JSON gateway (``/v3/...``) with aiohttp, the HTTP client the proxy
already has: keys and values travel base64, revisions and lease ids as strings, and fields at
their default value (a PUT event's type, ``succeeded: false``, revision 0) are left out.

The client rotates through the cluster's endpoints: a member that does not answer is skipped for
the next one, and only when none answers is the store unavailable (:class:`EtcdUnavailable`). A
member that answers with an error is not skipped: the cluster said no (:class:`EtcdError`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

__all__ = [
    "Compare",
    "Etcd",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "TxnResult",
    "WatchEvent",
    "delete_op",
    "prefix_end",
    "put_op",
]


ROUNDS = 2
ROUND_PAUSE = 0.2
REWATCH_PAUSE = 0.2  # after a watch ended, before the next one
log = logging.getLogger("dumont.cluster")


class EtcdError(Exception):
    """etcd refused a request; the message is one line."""


class EtcdUnavailable(EtcdError):
    """No member of the cluster answered in time."""


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(kv.get("key")).decode(errors="replace"),
            value=_unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction: ``key``'s ``target`` equals ``value``."""

    key: str
    target: Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
    value: int | bytes

    def as_json(self) -> dict[str, Any]:
        field = {
            "CREATE": "create_revision",
            "MOD": "mod_revision",
            "VERSION": "version",
            "VALUE": "value",
            "LEASE": "lease",
        }[self.target]
        value = _b64(self.value) if isinstance(self.value, bytes) else str(self.value)
        return {"key": _b64(self.key), "target": self.target, "result": "EQUAL", field: value}


def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete_op(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction: a decision's fencing token


class Etcd:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._credentials = (username, password) if username is not None else None
        self._token: str | None = None
        self._current = 0
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        await self._session.close()

    # ------------------------------------------------------------------------- transport

    async def _call(
        self, path: str, body: Mapping[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to the first member that answers; EtcdUnavailable if none does in two
        rounds (a member's death can cost the cluster an election: about a second)."""
        last = ""
        for attempt in range(ROUNDS * len(self.endpoints)):
            if attempt and attempt % len(self.endpoints) == 0:
                await asyncio.sleep(ROUND_PAUSE)
            index = (self._current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                answer = await self._post(endpoint, path, body, timeout or self.timeout)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{endpoint}: {type(exc).__name__} {exc}".strip()
                continue
            self._current = index
            return answer
        raise EtcdUnavailable(f"no etcd member answered (last: {last})")

    async def _post(
        self, endpoint: str, path: str, body: Mapping[str, Any], timeout: float
    ) -> dict[str, Any]:
        for _ in range(2):  # once more after a fresh token, if the first was stale
            headers = {"Authorization": self._token} if self._token else {}
            async with self._session.post(
                endpoint + path,
                data=json.dumps(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
            answer = json.loads(text) if text else {}
            if response.status == 200:
                return dict(answer)
            message = str(answer.get("error") or answer.get("message") or text).strip()
            if self._credentials and "token" in message and path != "/v3/auth/authenticate":
                self._token = await self._authenticate(endpoint)
                continue
            raise EtcdError(f"etcd {path}: HTTP {response.status}: {message[:200]}")
        raise EtcdError(f"etcd {path}: the credentials are refused")

    async def _authenticate(self, endpoint: str) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        body = {"name": name, "password": password}
        answer = await self._post(endpoint, "/v3/auth/authenticate", body, self.timeout)
        return str(answer["token"])

    async def connect(self) -> int:
        """Log in (with credentials) and return the store's revision: proof it answers."""
        if self._credentials is not None and self._token is None:
            for endpoint in self.endpoints:
                try:
                    self._token = await self._authenticate(endpoint)
                    break
                except (aiohttp.ClientError, TimeoutError, OSError):
                    continue
        answer = await self._call("/v3/kv/range", {"key": _b64("\0"), "limit": "1"})
        return int(answer["header"]["revision"])

    # ------------------------------------------------------------------------------- KV

    async def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the revision they were read at."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        answer = await self._call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs", [])]
        return int(answer["header"]["revision"]), kvs

    async def get(self, key: str) -> KeyValue | None:
        answer = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs", [])
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        answer = await self._call("/v3/kv/put", put_op(key, value, lease)["request_put"])
        return int(answer["header"]["revision"])

    async def delete(self, key: str) -> int:
        answer = await self._call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(answer["header"]["revision"])

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        body = {
            "compare": [c.as_json() for c in compare],
            "success": list(success),
            "failure": list(failure),
        }
        answer = await self._call("/v3/kv/txn", body)
        return TxnResult(bool(answer.get("succeeded", False)), int(answer["header"]["revision"]))

    # ---------------------------------------------------------------------------- leases

    async def grant(self, ttl: int) -> int:
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    async def keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renew ``lease``; its remaining TTL in seconds, 0 when it has already expired."""
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)}, timeout)
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # ----------------------------------------------------------------------------- watch

    async def follow(
        self,
        prefix: str,
        after: Callable[[], int],
        on_event: Callable[[WatchEvent], Awaitable[None]],
        reload: Callable[[], Awaitable[object]],
        what: str,
    ) -> None:
        """Every change under ``prefix`` after the revision ``after()`` names, forever: a watch
        that ends (a member died, the store is away) resumes from there after a pause; one the
        member compacted past calls ``reload`` (read everything again) and resumes."""
        while True:
            try:
                async for event in self.watch(prefix, after() + 1):
                    await on_event(event)
            except EtcdUnavailable as exc:
                log.info("watching %s: %s; watching again", what, exc)
                await asyncio.sleep(REWATCH_PAUSE)
            except EtcdError as exc:
                log.warning("watching %s: %s; reloading", what, exc)
                await reload()

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Every change under ``prefix`` from ``start_revision`` on, in order, for as long as
        the member streams; the caller re-watches from the last revision it saw when this ends
        (EtcdUnavailable) or the member compacted past it (EtcdError)."""
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        endpoint = self.endpoints[self._current]
        headers = {"Authorization": self._token} if self._token else {}
        try:
            async with self._session.post(
                endpoint + "/v3/watch",
                data=json.dumps(request),
                headers=headers,
                # No total: a watch lasts; a member that stops sending is noticed by the caller.
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout),
            ) as response:
                if response.status != 200:
                    raise EtcdError(f"etcd watch: HTTP {response.status}")
                async for line in response.content:
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if result.get("compact_revision") or result.get("canceled"):
                        reason = result.get("cancel_reason") or "compacted"
                        raise EtcdError(f"etcd watch canceled: {reason}")
                    for event in result.get("events", []):
                        kind: Literal["put", "delete"] = (
                            "delete" if event.get("type") == "DELETE" else "put"
                        )
                        yield WatchEvent(kind, KeyValue.from_json(event.get("kv", {})))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"etcd watch on {endpoint} ended: {exc}") from None
        self._current = (self._current + 1) % len(self.endpoints)
        raise EtcdUnavailable(f"etcd watch on {endpoint} ended")
