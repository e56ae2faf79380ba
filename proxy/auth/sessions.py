"""Sessions held by the proxy, not by code-server: a failover, a failback or a restart of the proxy
keeps the user signed in, because the cookie is sealed with keys from the configuration and no
backend keeps any of it. (Backends do receive the Cookie field as the browser sent it, the proxy's
cookie included; that is why a session works only at the Host it was issued at.)

The cookie carries the whole session (who, their groups, until when, where); the proxy keeps only
the revocations (a logout ends that session everywhere the cookie was copied), on disk in the
state directory when there is one, so a restart does not bring a signed-out session back; a list
it cannot read stops start-up rather than forget them.

Opening a cookie costs an AES-GCM decryption and a JSON parse (7-8 us, bench/signin.py); the data
plane asks for every request, so opened sessions are kept per cookie value (bounded): a hit is one
dict lookup.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.settings import SettingError

from .seal import Sealer

__all__ = ["SESSION_COOKIE", "Session", "SessionBook"]

SESSION_COOKIE = "dumont_session"
_PURPOSE = b"dumont session"
# Distinct cookie values kept opened: one per signed-in browser is plenty; past it the oldest go.
CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    email: str
    groups: frozenset[str]
    expires: float  # wall-clock seconds
    # The Host it was issued at, as the browser sent it. A session works only there: a backend
    # (a rented machine) that reads the cookie cannot take it to another workspace of that user.
    host: str


# What the cache answers for a cookie value it has not seen (one lookup instead of two).
_UNSEEN = Session("", "", frozenset(), 0.0, "")


class SessionBook:
    def __init__(
        self,
        sealer: Sealer,
        lifetime: float,
        revocations_file: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sealer = sealer
        self.lifetime = lifetime
        self.clock = clock
        self.revocations_file = revocations_file
        self.revoked: dict[str, float] = self._load()  # sid -> when its cookie expires anyway
        # Who hears of each revocation (sid, expires): proxy.cluster tells the other replicas.
        self.on_revoke: list[Callable[[str, float], None]] = []
        self.opened: OrderedDict[str | bytes, Session | None] = OrderedDict()

    def issue(self, email: str, groups: frozenset[str], host: str) -> tuple[Session, str]:
        """A new session at ``host`` and its cookie value."""
        expires = self.clock() + self.lifetime
        session = Session(secrets.token_urlsafe(16), email, groups, expires, host)
        payload = {
            "sid": session.sid, "email": email, "groups": sorted(groups), "exp": expires,
            "host": host,
        }  # fmt: skip
        value = self.sealer.seal(_PURPOSE, payload)
        return session, value

    def open(self, value: str | bytes) -> Session | None:
        """The live session a cookie value holds, or None (forged, tampered, expired, revoked);
        whoever asks checks its host. The data plane asks with the bytes it read: decoding them
        first cost every request 0.3 us for a dict key (a value is kept once per type)."""
        opened = self.opened
        session = opened.get(value, _UNSEEN)
        if session is _UNSEEN:
            text = value.decode("latin-1").strip() if isinstance(value, bytes) else value
            session = self._unseal(text)
            opened[value] = session
            if len(opened) > CACHE_SIZE:
                opened.popitem(last=False)
        return session if session is not None and self.live(session) else None

    def live(self, session: Session) -> bool:
        """Not expired, not revoked."""
        return session.expires > self.clock() and session.sid not in self.revoked

    def _unseal(self, value: str) -> Session | None:
        payload = self.sealer.open(_PURPOSE, value)
        if payload is None:
            return None
        try:
            return Session(
                str(payload["sid"]),
                str(payload["email"]),
                frozenset(str(g) for g in payload["groups"]),
                float(payload["exp"]),
                str(payload["host"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def revoke(self, session: Session) -> None:
        now = self.clock()
        self.revoked = {s: e for s, e in self.revoked.items() if e > now}
        self.revoked[session.sid] = session.expires
        self._save()
        for hear in self.on_revoke:
            hear(session.sid, session.expires)

    def learn_revoked(self, sid: str, expires: float) -> None:
        """Another replica revoked ``sid`` (proxy.cluster): refused here too, and remembered
        across a restart like this replica's own."""
        if self.revoked.get(sid) != expires and expires > self.clock():
            self.revoked[sid] = expires
            self._save()

    # ------------------------------------------------------------------- the revocation list

    def _load(self) -> dict[str, float]:
        path = self.revocations_file
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            now = self.clock()
            return {str(s): float(e) for s, e in data.items() if float(e) > now}
        except (OSError, ValueError, AttributeError) as exc:
            # Starting without it would bring signed-out sessions back: stop, as the workspace
            # store does with a file it cannot read, and let the operator look.
            raise SettingError(
                "state_dir", f"cannot read revoked sessions from {path} ({exc}); move it away"
            ) from None

    def _save(self) -> None:
        path = self.revocations_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.revoked))
        os.replace(temporary, path)  # a crash mid-write leaves the old list, never half of one
