"""The sign-in parts alone: sealed cookies and key rotation, sessions and their revocation list,
who may sign in and who owns a workspace, the [auth] settings' checks, owners in a workspace's
document, and the Cookie field as the gate reads it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from proxy.auth.config import AuthConfig
from proxy.auth.errors import SignInRefused
from proxy.auth.gate import SignInGate, session_cookie, strip_session_cookie
from proxy.auth.metrics import AuthMetrics
from proxy.auth.policy import admitted_identity, may_open
from proxy.auth.seal import Sealer, read_keys
from proxy.auth.sessions import CACHE_SIZE, Session, SessionBook
from proxy.config import configured_workspaces, load_config, workspace_setting
from proxy.dataplane.handlers import PublicHandler
from proxy.dataplane.messages import RequestHead
from proxy.errors import ConfigError
from proxy.server import ProxyServer
from proxy.settings import SettingError
from proxy.workspaces.spec import parse_workspace

if TYPE_CHECKING:
    from proxy.sites import Sites

KEY_A, KEY_B = secrets.token_bytes(32), secrets.token_bytes(32)


def test_a_sealed_value_opens_only_as_sealed() -> None:
    sealer = Sealer([KEY_A])
    value = sealer.seal(b"p", {"x": 1})
    assert sealer.open(b"p", value) == {"x": 1}
    assert sealer.open(b"other purpose", value) is None
    assert Sealer([KEY_B]).open(b"p", value) is None
    key_id, body = value.split(".")
    for bad in (value[:-1], f"{key_id}.{body[::-1]}", f"{key_id}.", "", "x.y.z", value + "A"):
        assert sealer.open(b"p", bad) is None


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    before = Sealer([KEY_A]).seal(b"p", {"x": 1})
    rotated = Sealer([KEY_B, KEY_A])
    assert rotated.open(b"p", before) == {"x": 1}
    after = rotated.seal(b"p", {"x": 2})
    assert Sealer([KEY_B]).open(b"p", after) == {"x": 2}
    assert Sealer([KEY_A]).open(b"p", after) is None


def test_the_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# newest first\n{KEY_B.hex()}\n\n{KEY_A.hex()}  # old\n")
    assert read_keys("k", str(path)) == (KEY_B, KEY_A)
    path.write_text("abcd\n")
    with pytest.raises(SettingError, match="64 hex digits"):
        read_keys("k", str(path))
    path.write_text("# nothing\n")
    with pytest.raises(SettingError, match="no key"):
        read_keys("k", str(path))


def test_sessions_expire_and_revocations_survive_a_restart(tmp_path: Path) -> None:
    now = [1000.0]
    revoked = tmp_path / "state" / "auth-revoked.json"
    book = SessionBook(Sealer([KEY_A]), 60.0, revoked, clock=lambda: now[0])
    alice, alice_cookie = book.issue("alice@example.com", frozenset({"dev"}), "a.test")
    bob, bob_cookie = book.issue("bob@example.com", frozenset(), "a.test")
    assert book.open(alice_cookie) == alice
    book.revoke(alice)
    assert book.open(alice_cookie) is None
    again = SessionBook(Sealer([KEY_A]), 60.0, revoked, clock=lambda: now[0])
    assert again.open(alice_cookie) is None
    assert again.open(bob_cookie) == bob
    now[0] += 61
    assert again.open(bob_cookie) is None
    # expired revocations are dropped from the file when it is next written
    again.revoke(bob)
    assert (
        alice.sid not in SessionBook(Sealer([KEY_A]), 60.0, revoked, clock=lambda: now[0]).revoked
    )


def test_an_unreadable_revocation_list_stops_start_up(tmp_path: Path) -> None:
    revoked = tmp_path / "auth-revoked.json"
    revoked.write_text("{not json")
    with pytest.raises(SettingError, match="move it away"):
        SessionBook(Sealer([KEY_A]), 60.0, revoked)


def test_the_opened_sessions_cache_is_bounded() -> None:
    book = SessionBook(Sealer([KEY_A]), 60.0, None)
    for i in range(CACHE_SIZE + 10):
        book.open(f"nope{i}")
    assert len(book.opened) == CACHE_SIZE


def _auth(**fields: object) -> AuthConfig:
    return AuthConfig(mode="oidc", **fields)  # type: ignore[arg-type]


def test_who_may_sign_in() -> None:
    by_email = _auth(allowed_emails=("alice@example.com",))
    assert admitted_identity(by_email, {"email": "Alice@Example.com"})[0] == "alice@example.com"
    with pytest.raises(SignInRefused) as refused:
        admitted_identity(by_email, {"email": "bob@example.com", "email_verified": True})
    assert refused.value.why == "not_allowed"
    by_domain = _auth(allowed_domains=("example.com",))
    assert admitted_identity(by_domain, {"email": "bob@example.com", "email_verified": True})
    with pytest.raises(SignInRefused):  # an unverified address proves nothing about its domain
        admitted_identity(by_domain, {"email": "bob@example.com", "email_verified": False})
    by_group = _auth(allowed_groups=("dev",), groups_claim="roles")
    assert admitted_identity(by_group, {"email": "c@x.test", "roles": ["Dev"]})[1] == {"dev"}
    with pytest.raises(SignInRefused) as refused:
        admitted_identity(by_group, {"roles": ["dev"]})
    assert refused.value.why == "no_email"


def test_owners() -> None:
    alice = Session("s", "alice@example.com", frozenset({"dev"}), 0.0, "a.test")
    assert may_open(alice, ())
    assert may_open(alice, ("bob@example.com", "alice@example.com"))
    assert may_open(alice, ("group:dev",))
    assert not may_open(alice, ("bob@example.com", "group:ops"))


def test_owners_in_a_workspace_document() -> None:
    document = {
        "hosts": ["a.example.com"],
        "primary": "http://10.0.0.1:8080",
        "standby": "http://10.0.0.2:8080",
        "owners": ["Alice@Example.com", "group:Admins", "alice@example.com"],
    }
    spec = parse_workspace("a", document, workspace_setting)
    assert spec.owners == ("alice@example.com", "group:admins")
    assert parse_workspace("a", spec.document(), workspace_setting) == spec
    plain = parse_workspace("a", {**document, "owners": []}, workspace_setting)
    assert "owners" not in plain.document()
    for bad in ("alice", "group:", "a b@c", 3):
        with pytest.raises(SettingError, match="owners"):
            parse_workspace("a", {**document, "owners": [bad]}, workspace_setting)
    with pytest.raises(SettingError, match="owners"):
        parse_workspace("a", {**document, "owners": "alice@example.com"}, workspace_setting)


BACKENDS = {"DUMONT_PRIMARY": "http://127.0.0.1:1", "DUMONT_STANDBY": "http://127.0.0.1:2"}


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({}, "auth.issuer"),
        ({"DUMONT_AUTH_ISSUER": "ftp://x"}, "auth.client_id"),
        ({"DUMONT_AUTH_ISSUER": "https://idp", "DUMONT_AUTH_CLIENT_ID": "c",
          "DUMONT_AUTH_COOKIE_KEYS_FILE": "/k"}, "auth.client_secret"),
        ({"DUMONT_AUTH_ISSUER": "https://idp", "DUMONT_AUTH_CLIENT_ID": "c",
          "DUMONT_AUTH_COOKIE_KEYS_FILE": "/k", "DUMONT_AUTH_CLIENT_SECRET": "s"},
         "auth.allowed_emails"),
    ],
)  # fmt: skip
def test_oidc_settings_must_agree(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, {**BACKENDS, "DUMONT_AUTH_MODE": "oidc", **env})
    assert error.value.key in (key, "auth.client_id")


async def test_mode_none_builds_no_gate_at_all() -> None:
    config = load_config(
        None, {**BACKENDS, "DUMONT_LISTEN": "127.0.0.1:0", "DUMONT_CONTROL_LISTEN": "127.0.0.1:0"}
    )
    assert config.auth.mode == "none"
    server = ProxyServer(config)
    assert server.auth is None
    await server.start()
    try:
        assert server.public is not None
        handler = server.public.context.handler
        assert isinstance(handler, PublicHandler)
        assert handler.gate is None
    finally:
        await server.stop()
    assert configured_workspaces(config)[0].owners == ()


def test_the_gate_reads_the_session_cookie() -> None:
    def head(*cookies: bytes) -> RequestHead:
        raw = [(b"Host", b"x"), *((b"Cookie", c) for c in cookies)]
        return RequestHead("GET", "/", "1.1", raw, keep_alive=True)

    assert session_cookie(head(b"a=1; dumont_session=S1; b=2")) == "S1"
    assert session_cookie(head(b"dumont_session=S2")) == "S2"
    assert session_cookie(head(b"xdumont_session=no; other=1")) is None
    assert session_cookie(head(b"xdumont_session=no; dumont_session=S3")) == "S3"
    assert session_cookie(head(b"a=1", b"dumont_session=S4")) == "S4"
    assert session_cookie(head()) is None


def test_a_proxy_without_sign_in_never_loads_its_libraries() -> None:
    """httpx, joserfc and cryptography are about 14 MB of an idle proxy's memory."""
    script = (
        "import sys, asyncio\n"
        "from yarl import URL\n"
        "from proxy.config import Config\n"
        "from proxy.server import ProxyServer\n"
        "async def main():\n"
        "    ProxyServer(Config(primary=URL('http://127.0.0.1:9'), standby=URL('http://127.0.0.1:10')))\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('httpx', 'joserfc', 'cryptography') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]", run.stderr


@pytest.mark.parametrize(
    ("cookie", "left"),
    [
        (b"a=1; dumont_session=x; b=2", b"a=1; b=2"),
        (b"a=1;dumont_session=x;b=2", b"a=1; b=2"),
        (b"dumont_session=x; b=2", b"b=2"),
        (b"a=1; dumont_session=x", b"a=1"),
        (b"dumont_session=x", None),
        (b"xdumont_session=1; dumont_session=x", b"xdumont_session=1"),
        (b"dumont_session=x; a=1; dumont_session=tossed", b"a=1"),
        (b"a=1; b=2", b"a=1; b=2"),
    ],
)
def test_the_gate_takes_only_its_own_cookie_out(cookie: bytes, left: bytes | None) -> None:
    fields = [(b"Host", b"h"), (b"Cookie", cookie), (b"Cookie", b"theme=dark")]
    head = RequestHead("GET", "/", "1.1", fields, keep_alive=True)
    strip_session_cookie(head)
    kept = [value for name, value in head.raw_headers if name == b"Cookie"]
    assert kept == ([] if left is None else [left]) + [b"theme=dark"]
    assert head.names.count(b"cookie") == len(kept)


def test_the_gate_takes_a_session_cookie_out_of_every_cookie_field() -> None:
    fields = [
        (b"Cookie", b"dumont_session=a"), (b"Host", b"h"), (b"Cookie", b"t=1; dumont_session=b"),
        (b"Cookie", b"dumont_session=c"), (b"Cookie", b"u=2"),
    ]  # fmt: skip
    head = RequestHead("GET", "/", "1.1", fields, keep_alive=True)
    assert session_cookie(head) == "a"
    strip_session_cookie(head)
    assert head.raw_headers == [(b"Host", b"h"), (b"Cookie", b"t=1"), (b"Cookie", b"u=2")]
    assert head.names == [b"host", b"cookie", b"cookie"]


def test_the_gate_remembers_a_cookie_field_but_asks_if_its_session_still_lives() -> None:
    now = [1000.0]
    book = SessionBook(Sealer([KEY_A]), 60.0, None, clock=lambda: now[0])
    session, value = book.issue("alice@example.com", frozenset(), "alice.test")
    site = SimpleNamespace(spec=SimpleNamespace(owners=("alice@example.com",)))
    sites = cast("Sites", SimpleNamespace(for_host=lambda host: site))
    gate = SignInGate(sites, book, AuthMetrics())
    field = f"theme=dark; dumont_session={value}; lang=en".encode()

    def ask(host: str = "alice.test") -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
        head = RequestHead("GET", "/", "1.1", [(b"Host", b"h"), (b"Cookie", field)], True)
        return gate.refusal(head, host), head.raw_headers

    for _ in range(2):  # the second time from what the gate remembered: the same answer
        assert ask() == (None, [(b"Host", b"h"), (b"Cookie", b"theme=dark; lang=en")])
    assert len(gate.fields) == 1
    assert ask("bob.test")[0] == b"X-Dumont-Auth: 401"  # another Host's session it is not
    book.revoke(session)
    assert ask()[0] == b"X-Dumont-Auth: 401"  # logged out: remembered or not, refused
    _, value = book.issue("alice@example.com", frozenset(), "alice.test")
    field = f"dumont_session={value}".encode()
    assert ask() == (None, [(b"Host", b"h")])  # the field held only ours: it goes
    now[0] += 61
    assert ask()[0] == b"X-Dumont-Auth: 401"  # expired
