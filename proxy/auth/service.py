"""Sign-in, built: the issuer's client, the sealer, the sessions, the gate, the routes and the
admin surface, made from the configuration (``build``) and put on the pages app
(``Auth.install``).

Only imported when ``[auth] mode`` is not "none" (proxy.auth.build_auth): httpx, joserfc and
cryptography cost an idle proxy about 14 MB of memory it has no use for without sign-in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from aiohttp import web

from proxy.errors import ConfigError
from proxy.settings import SettingError

from .admin import ADMIN_ROOT, AdminGuard, make_admin_app
from .config import check_auth, read_secret
from .csrf import CsrfTokens
from .gate import SignInGate
from .metrics import AuthMetrics
from .oidc import Issuer
from .routes import SignIn, add_auth_routes
from .seal import Sealer, read_keys
from .sessions import SessionBook

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.sites import Sites

__all__ = ["Auth", "build"]

log = logging.getLogger("dumont.auth")
# The issuer answers discovery, JWKS and token requests at once or is down.
ISSUER_TIMEOUT = 10.0
REVOCATIONS_FILE = "auth-revoked.json"


@dataclass(frozen=True)
class Auth:
    sign_in: SignIn
    gate: SignInGate
    metrics: AuthMetrics
    client: httpx.AsyncClient
    admin: web.Application  # the control app behind the admins' guard (proxy.auth.admin)

    def install(self, app: web.Application) -> None:
        """The sign-in routes, the answers to what the data plane's gate refused, and the admin
        surface. Before the pages' routes: their catch-all under /__dumont/ would match first."""
        add_auth_routes(app, self.sign_in)
        app.add_subapp(ADMIN_ROOT, self.admin)

    async def close(self) -> None:
        await self.client.aclose()


def build(config: Config, sites: Sites) -> Auth:
    auth = config.auth
    try:
        check_auth(auth)
        assert auth.issuer is not None
        assert auth.client_id is not None
        assert auth.cookie_keys_file is not None
        secret = auth.client_secret
        if auth.client_secret_file is not None:
            secret = read_secret("auth.client_secret_file", auth.client_secret_file)
        assert secret is not None
        keys = read_keys("auth.cookie_keys_file", auth.cookie_keys_file)
    except SettingError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    sealer = Sealer(keys)
    if config.tls.cert is None and not config.trusted_proxies and not config.listen.is_loopback:
        # Without TLS here or a TLS front proxy saying so, the session cookie cannot be Secure.
        log.warning(
            "auth: sign-in without TLS (no tls.cert, no trusted_proxies): session cookies"
            " cross the network in clear"
        )
    if auth.admins and auth.admin_host is None:
        # At a workspace's Host the admin pages share an origin with its backend's pages, whose
        # scripts could read the CSRF token an admin's page carries there (docs/SIGNIN.md).
        log.warning(
            "auth: admins without admin_host: the admin pages answer at every workspace's Host,"
            " same-origin with its backend; give [auth] admin_host a Host no workspace serves"
        )
    revocations = None if config.state_dir is None else config.state_dir / REVOCATIONS_FILE
    try:
        sessions = SessionBook(sealer, auth.session_lifetime, revocations)
    except SettingError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    metrics = AuthMetrics()
    client = httpx.AsyncClient(timeout=ISSUER_TIMEOUT, follow_redirects=False)
    issuer = Issuer(auth.issuer, auth.client_id, secret, client)
    templates = config.assets_dir / "templates"
    sign_in = SignIn(auth, issuer, sealer, sessions, metrics, templates)
    guard = AdminGuard(sign_in, auth.admins, CsrfTokens(keys), sites, auth.admin_host)
    admin = make_admin_app(sites, guard)
    return Auth(sign_in, SignInGate(sites, sessions, metrics), metrics, client, admin)
