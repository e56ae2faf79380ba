"""Sign-in at the proxy (issue 17): OpenID Connect in front of every workspace.

- ``config``: the ``[auth]`` settings and their checks.
- ``oidc``: the relying party (discovery, PKCE, the token request, ID token checks with joserfc).
- ``seal``, ``sessions``: sealed cookies (AES-GCM), sessions kept per cookie value, revocations.
- ``policy``: who may sign in, who owns a workspace, who is an admin.
- ``gate``: the data plane's question per request (proxy.dataplane.router.Gate).
- ``routes``: login, callback, logout and the answers to refused requests, on the pages app.
- ``admin``, ``csrf``: the dashboard and the control API for ``admins`` with a browser session,
  at /__dumont/admin/ on the public listener, with CSRF tokens bound to the session.
- ``metrics``: ``dumont_auth_*``.

``build_auth`` makes all of it (``service``) from the configuration, or nothing with
``mode = "none"``; the libraries sign-in needs are loaded only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import AuthConfig, check_auth

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.sites import Sites

    from .service import Auth

__all__ = ["AuthConfig", "build_auth", "check_auth"]


def build_auth(config: Config, sites: Sites) -> Auth | None:
    """Sign-in as configured, or None with ``mode = "none"`` (no gate at all)."""
    if config.auth.mode == "none":
        return None
    # Imported here, not above: its libraries (httpx, joserfc, cryptography) are about 14 MB of
    # an idle proxy's memory, paid only by a proxy that signs people in.
    from .service import build

    return build(config, sites)
