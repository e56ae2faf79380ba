"""The admin surface's parts alone: the CSRF token function, who is an admin, and the [auth]
admins setting read by the same rules as a workspace's owners."""

from __future__ import annotations

import secrets

import pytest

from proxy.auth.csrf import CsrfTokens
from proxy.auth.policy import is_admin, may_open
from proxy.auth.sessions import Session
from proxy.config import load_config
from proxy.errors import ConfigError

KEY_A, KEY_B = secrets.token_bytes(32), secrets.token_bytes(32)
BACKENDS = {"DUMONT_PRIMARY": "http://127.0.0.1:1", "DUMONT_STANDBY": "http://127.0.0.1:2"}


def test_a_csrf_token_belongs_to_one_session_and_one_key() -> None:
    tokens = CsrfTokens([KEY_A])
    token = tokens.token("sid-1")
    assert token == tokens.token("sid-1")  # stateless: the same session, the same token
    assert tokens.valid("sid-1", token)
    assert not tokens.valid("sid-2", token)  # another session's
    assert tokens.token("sid-2") != token
    assert not CsrfTokens([KEY_B]).valid("sid-1", token)  # another proxy's keys
    for forged in (None, "", token[:-1], token + "A", token.upper(), "é" * 43, "x"):
        assert not tokens.valid("sid-1", forged)
    assert not tokens.valid("", tokens.token(""))  # no session, no token


def test_a_csrf_token_outlives_a_key_rotation() -> None:
    old = CsrfTokens([KEY_A]).token("sid")
    rotated = CsrfTokens([KEY_B, KEY_A])
    assert rotated.valid("sid", old)  # an open dashboard keeps working
    assert rotated.token("sid") != old  # new pages get the new key's token
    assert not CsrfTokens([KEY_B]).valid("sid", old)  # the old key dropped: refused


def test_a_csrf_token_does_not_reveal_the_cookie_key() -> None:
    import base64
    import hashlib
    import hmac

    token = CsrfTokens([KEY_A]).token("sid")
    raw = hmac.new(KEY_A, b"csrf\0sid", hashlib.sha256).digest()
    assert token != base64.urlsafe_b64encode(raw).decode().rstrip("=")  # a derived key, not it


def _session(email: str, *groups: str) -> Session:
    return Session("sid", email, frozenset(groups), 0.0, "h")


def test_admins_match_as_owners_do_but_none_means_nobody() -> None:
    admins = ("carol@example.com", "group:ops")
    assert is_admin(_session("carol@example.com"), admins)
    assert is_admin(_session("dave@example.com", "ops"), admins)
    assert not is_admin(_session("dave@example.com", "dev"), admins)
    assert not is_admin(_session("carol@example.com"), ())
    assert may_open(_session("carol@example.com"), ())  # owners: none means everyone


def test_the_admins_setting_reads_like_owners() -> None:
    env = {**BACKENDS, "DUMONT_AUTH_ADMINS": "Carol@Example.com, group:Ops"}
    assert load_config(None, env).auth.admins == ("carol@example.com", "group:ops")
    with pytest.raises(ConfigError) as error:
        load_config(None, {**BACKENDS, "DUMONT_AUTH_ADMINS": "not an address"})
    assert error.value.key == "auth.admins"


def test_the_admin_host_setting_is_one_host_name() -> None:
    env = {**BACKENDS, "DUMONT_AUTH_ADMIN_HOST": "Dumont.Example.com:443"}
    assert load_config(None, env).auth.admin_host == "dumont.example.com"
    assert load_config(None, BACKENDS).auth.admin_host is None
    for bad in ("10.0.0.1", "*.example.com", "[::1]"):
        with pytest.raises(ConfigError) as error:
            load_config(None, {**BACKENDS, "DUMONT_AUTH_ADMIN_HOST": bad})
        assert error.value.key == "auth.admin_host"
