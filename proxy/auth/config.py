"""The ``[auth]`` settings: who may sign in at the proxy, and with which OpenID provider.

``mode = "none"`` (the default) is the proxy as it always was: no gate, no cost on the data plane.
``mode = "oidc"`` puts every workspace behind single sign-on (issue 17); ``check_auth`` says what
the settings must agree on, and start-up stops with one line naming the key when they do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxy.settings import (
    SettingError,
    count,
    optional_text,
    positive_seconds,
    setting,
    text,
    texts,
)
from proxy.workspaces.hosts import normalise_host
from proxy.workspaces.spec import owner

__all__ = ["AuthConfig", "check_auth", "read_secret"]


def _lower_texts(key: str, raw: Any) -> tuple[str, ...]:
    # E-mail addresses, domains and group names compare case-insensitively everywhere here.
    return tuple(item.lower() for item in texts(key, raw))


def _admins(key: str, raw: Any) -> tuple[str, ...]:
    # The same entries as a workspace's owners (an address or group:NAME), read by the same rule.
    return tuple(dict.fromkeys(owner(key, item) for item in texts(key, raw)))


def _admin_host(key: str, raw: Any) -> str | None:
    given = optional_text(key, raw)
    if given is None:
        return None
    host = normalise_host(given)
    if host is None or host.startswith("*"):
        raise SettingError(key, f"expected a host name, got {raw!r}")
    return host


def _list(help: str, metavar: str) -> Any:
    return setting((), help=help, parse=_lower_texts, metavar=metavar, shown_default="none")


@dataclass(frozen=True)
class AuthConfig:
    mode: Literal["none", "oidc"] = setting(
        "none",
        help="sign-in at the proxy: none (the backends' own password only) or oidc",
        choices=("none", "oidc"),
    )
    issuer: str | None = setting(
        None,
        help="the OpenID provider's issuer URL (its /.well-known/openid-configuration is read)",
        parse=optional_text,
        metavar="URL",
    )
    client_id: str | None = setting(
        None, help="this proxy's client id at the issuer", parse=optional_text, metavar="ID"
    )
    client_secret: str | None = setting(
        None,
        help="this proxy's client secret (prefer client_secret_file)",
        parse=optional_text,
        metavar="SECRET",
    )
    client_secret_file: str | None = setting(
        None, help="file holding the client secret", parse=optional_text, metavar="FILE"
    )
    scopes: tuple[str, ...] = setting(
        ("openid", "email", "profile"),
        help="scopes asked for (openid is always added)",
        parse=texts,
        metavar="SCOPES",
    )
    allowed_emails: tuple[str, ...] = _list("e-mail addresses that may sign in", "EMAILS")
    allowed_domains: tuple[str, ...] = _list(
        "e-mail domains whose (verified) addresses may sign in", "DOMAINS"
    )
    groups_claim: str = setting(
        "groups",
        help="the ID token claim listing the user's groups",
        parse=text,
        metavar="CLAIM",
    )
    allowed_groups: tuple[str, ...] = _list("groups whose members may sign in", "GROUPS")
    admins: tuple[str, ...] = setting(
        (),
        help="who may use the dashboard and the control API from a browser, at"
        " /__dumont/admin/ on the public listener: e-mail addresses and group:NAME",
        parse=_admins,
        metavar="ADMINS",
        shown_default="none",
    )
    admin_host: str | None = setting(
        None,
        help="the one Host at which /__dumont/admin/ answers (recommended: a name no workspace"
        " serves, so that no backend's pages share the dashboard's origin); none: every Host",
        parse=_admin_host,
        metavar="HOST",
    )
    session_lifetime: float = setting(
        12 * 3600.0,
        help="seconds a sign-in lasts before the user signs in again",
        parse=positive_seconds,
        metavar="S",
    )
    attempts_per_minute: float = setting(
        20.0,
        help="sign-in starts and callbacks allowed per client address per minute (then 429)",
        parse=positive_seconds,
        metavar="N",
    )
    attempts_burst: int = setting(
        10, help="sign-in attempts one address may make at once", parse=count, metavar="N"
    )
    cookie_keys_file: str | None = setting(
        None,
        help="file of session cookie keys, one per line (64 hex digits each); the first seals,"
        " every one opens (rotation: add a new first line, drop the old one a lifetime later)",
        parse=optional_text,
        metavar="FILE",
    )


def read_secret(key: str, path: str) -> str:
    try:
        value = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise SettingError(key, f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SettingError(key, f"{path} is empty")
    return value


def check_auth(auth: AuthConfig) -> None:
    """What no single [auth] setting can say; raises SettingError naming the key."""
    if auth.mode == "none":
        return
    for key in ("issuer", "client_id", "cookie_keys_file"):
        if getattr(auth, key) is None:
            raise SettingError(f"auth.{key}", 'required with auth.mode = "oidc"')
    assert auth.issuer is not None
    if not auth.issuer.startswith(("https://", "http://")):
        raise SettingError("auth.issuer", f"expected an http(s) URL, got {auth.issuer!r}")
    if (auth.client_secret is None) == (auth.client_secret_file is None):
        raise SettingError(
            "auth.client_secret", "give exactly one of client_secret and client_secret_file"
        )
    if not (auth.allowed_emails or auth.allowed_domains or auth.allowed_groups):
        raise SettingError(
            "auth.allowed_emails",
            "nobody may sign in: give allowed_emails, allowed_domains or allowed_groups",
        )
