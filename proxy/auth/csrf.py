"""CSRF tokens for the dashboard's buttons when an admin uses them from a browser session.

The session cookie is SameSite=Lax, which keeps it off cross-site POSTs from other sites, but not
off requests from a sibling Host of the same site (another workspace's IDE, which runs whatever
its user put there) nor from a browser that ignores SameSite. So every state-changing request of
the admin surface must carry, in ``X-CSRF-Token``, a token only a page of this proxy could have
read: an HMAC of the session's id under a key derived from the cookie keys. Nothing is stored:
the token is recomputed from the session, it dies with the session (logout, expiry), and a token
from another session, another proxy's keys or no page at all is refused.

The key is derived (HMAC of a label under the cookie key) rather than the cookie key itself, so
that a CSRF token says nothing about the key that seals the cookies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["CSRF_HEADER", "CsrfTokens"]

CSRF_HEADER = "X-CSRF-Token"
_LABEL = b"dumont csrf key"


class CsrfTokens:
    def __init__(self, cookie_keys: Sequence[bytes]) -> None:
        if not cookie_keys:
            raise ValueError("CsrfTokens needs at least one key")
        # The first key makes tokens; every key checks them, as with the cookies (rotation keeps
        # an open dashboard working until its page is next loaded).
        self.keys = tuple(hmac.new(k, _LABEL, hashlib.sha256).digest() for k in cookie_keys)

    def token(self, sid: str) -> str:
        return self._token(self.keys[0], sid)

    def valid(self, sid: str, given: str | None) -> bool:
        """Whether ``given`` is the token of session ``sid`` under any of the keys."""
        if not given or not sid:
            return False
        given_bytes = given.encode("ascii", "replace")
        # compare_digest: the time taken must not say how much of a guess was right.
        return any(
            hmac.compare_digest(self._token(key, sid).encode(), given_bytes) for key in self.keys
        )

    @staticmethod
    def _token(key: bytes, sid: str) -> str:
        digest = hmac.new(key, b"csrf\0" + sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
