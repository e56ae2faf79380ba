"""``[cluster]``: the etcd cluster proxy replicas agree through (issue 16). Without endpoints the
proxy runs alone, exactly as before."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

from proxy.settings import (
    SettingError,
    count,
    optional_text,
    positive_seconds,
    setting,
    text,
    texts,
)

__all__ = ["MIN_LEASE_TTL", "ClusterConfig"]

# etcd's lease TTL floor is about its election timeout; below 2 s a slow disk loses leases.
MIN_LEASE_TTL = 2


def _endpoints(key: str, raw: Any) -> tuple[str, ...]:
    found = []
    for item in texts(key, raw):
        if not item.startswith(("http://", "https://")) or item.count("/") > 3:
            raise SettingError(key, f"expected http(s)://HOST:PORT, got {item!r}")
        found.append(item.rstrip("/"))
    return tuple(found)


def _prefix(key: str, raw: Any) -> str:
    value = text(key, raw).strip().rstrip("/")
    if not value.startswith("/") or len(value) < 2:
        raise SettingError(key, f"expected an absolute key prefix such as /dumont, got {raw!r}")
    return value


def _ttl(key: str, raw: Any) -> int:
    value = int(count(key, raw))
    if value < MIN_LEASE_TTL:
        raise SettingError(key, f"must be at least {MIN_LEASE_TTL} s (etcd's floor), got {raw!r}")
    return value


@dataclass(frozen=True)
class ClusterConfig:
    endpoints: tuple[str, ...] = setting(
        (),
        help="etcd client URLs (comma-separated); none: this proxy runs alone",
        parse=_endpoints,
        metavar="URLS",
        shown_default="none",
    )
    prefix: str = setting(
        "/dumont", help="etcd key prefix of this cluster", parse=_prefix, metavar="PREFIX"
    )
    lease_ttl: int = setting(
        3, help="seconds a leader's lease lives without renewal", parse=_ttl, metavar="S"
    )
    replica_id: str = setting(
        default_factory=socket.gethostname,
        help="this replica's name in the cluster",
        parse=text,
        metavar="NAME",
        shown_default="the host name",
    )
    advertise: str | None = setting(
        None,
        help="the URL other replicas reach this one's control listener at",
        parse=optional_text,
        metavar="URL",
        shown_default="http://CONTROL_LISTEN",
    )
    view_grace: float = setting(
        2.0,
        help="seconds the leader's own view of a backend being down must last before it fails"
        " over with no other replica agreeing",
        parse=positive_seconds,
        metavar="S",
    )
    store_lost_grace: float = setting(
        60.0,
        help="with the store lost by every replica: seconds to keep routing by the last"
        " decisions, with no switch, before stopping",
        parse=positive_seconds,
        metavar="S",
    )
    ca: str | None = setting(
        None, help="CA bundle that signed etcd's certificates", parse=optional_text, metavar="FILE"
    )
    cert: str | None = setting(
        None, help="client certificate for etcd", parse=optional_text, metavar="FILE"
    )
    key: str | None = setting(
        None, help="client certificate's private key", parse=optional_text, metavar="FILE"
    )
    username: str | None = setting(
        None, help="etcd user (with password)", parse=optional_text, metavar="NAME"
    )
    password: str | None = setting(
        None, help="etcd user's password", parse=optional_text, metavar="SECRET"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.endpoints)

    def problems(self, health_interval: float) -> tuple[str, str] | None:
        """(key, problem) for settings that cannot work together, else None."""
        if not self.enabled:
            return None
        if (self.cert is None) != (self.key is None):
            return (
                "cluster.key" if self.key is None else "cluster.cert",
                "cert and key go together",
            )
        if (self.username is None) != (self.password is None):
            missing = "cluster.password" if self.password is None else "cluster.username"
            return (missing, "username and password go together")
        if health_interval > self.lease_ttl:
            return (
                "cluster.lease_ttl",
                f"must be at least the health interval ({health_interval:g} s): a leader must"
                " see a check between two renewals",
            )
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not any(e.startswith("https://") for e in self.endpoints):
            return None
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context
