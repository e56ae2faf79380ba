"""What one workspace is, as a user writes it: a name, the Host names it answers, two backends,
overrides of the proxy's failover settings, and who owns it (with sign-in at the proxy, issue 17).

The same document comes from a ``[workspaces.NAME]`` table of the TOML file, from the control API's
``PUT /admin/workspaces/NAME`` and from the state directory, and is checked here once: every
problem is a :class:`SettingError` whose key names the field (``workspaces.alice.primary``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from proxy.settings import SettingError, text

__all__ = [
    "CATCH_ALL",
    "OVERRIDABLE",
    "SettingParser",
    "WorkspaceSpec",
    "backend_url",
    "check_name",
    "host_pattern",
    "owner",
    "parse_workspace",
]

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# The pattern that matches every Host: what the --primary/--standby workspace answers, and what
# default_workspace gives a named one.
CATCH_ALL = "*"
# The proxy settings a workspace may set for itself (dotted keys, or a whole table by its name).
OVERRIDABLE = ("health", "hooks", "prices", "failback", "failback_hold", "connect_timeout",
               "switch_wait", "pages.tips", "pages.tips_enabled")  # fmt: skip
_FIELDS = frozenset({"hosts", "primary", "standby", "overrides", "owners"})
# An owner is an e-mail address or a group of the sign-in provider's groups claim.
OWNER_GROUP = "group:"

# Parses one proxy setting by its dotted key (the proxy's Schema, handed in by proxy.config).
SettingParser = Callable[[str, Any], Any]


@dataclass(frozen=True)
class WorkspaceSpec:
    name: str
    hosts: tuple[str, ...]  # lower-case names, "*.suffix" wildcards, or CATCH_ALL
    primary: URL
    standby: URL
    # Dotted proxy keys -> parsed values ("health.interval" -> 0.5), and the same as the user
    # wrote them, for the API and the state directory.
    overrides: Mapping[str, Any]
    written_overrides: Mapping[str, Any]
    # Who may open it once signed in: lower-case addresses and "group:NAME"; () is everyone.
    owners: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        """The JSON the API answers and the state directory keeps; parse_workspace reads it."""
        document: dict[str, Any] = {
            "hosts": list(self.hosts),
            "primary": str(self.primary),
            "standby": str(self.standby),
            "overrides": _nested(self.written_overrides),
        }
        if self.owners:  # absent rather than empty: documents from before issue 17 read the same
            document["owners"] = list(self.owners)
        return document

    def same_backends(self, other: WorkspaceSpec) -> bool:
        return (self.primary, self.standby) == (other.primary, other.standby)

    def url(self, role: str) -> URL:
        return self.primary if role == "primary" else self.standby


def check_name(key: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise SettingError(key, f"a workspace name is [a-z0-9-], at most 63, got {name!r}")
    return name


def backend_url(key: str, raw: Any) -> URL:
    value = text(key, raw).strip()
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise SettingError(key, f"not a URL: {value!r} ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise SettingError(key, f"expected http://HOST:PORT or https://HOST:PORT, got {value!r}")
    if url.query_string or url.fragment:
        raise SettingError(key, f"a backend URL takes no query or fragment: {value!r}")
    try:
        url.port  # noqa: B018 - yarl raises here for a port out of range
    except ValueError as exc:
        raise SettingError(key, f"bad port in {value!r}") from exc
    return url.with_path(url.path.rstrip("/") or "/")


def host_pattern(key: str, raw: Any) -> str:
    """``alice.ide.example.com``, ``*.alice.example.org`` or ``*``; case-insensitive, no port."""
    value = text(key, raw).strip().lower().rstrip(".")
    if value == CATCH_ALL:
        return value
    name = value.removeprefix("*.")
    if ":" in name or "/" in name:
        raise SettingError(key, f"a host name, without port or path, got {raw!r}")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise SettingError(
            key, f"an address is no workspace's name (use default_workspace): {raw!r}"
        )
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise SettingError(key, f"not a host name or *.suffix: {raw!r}")
    return value


def owner(key: str, raw: Any) -> str:
    """``alice@example.com`` or ``group:NAME``, compared case-insensitively."""
    value = text(key, raw).strip().lower()
    if value.startswith(OWNER_GROUP):
        if len(value) > len(OWNER_GROUP):
            return value
    elif "@" in value.strip("@") and not any(c.isspace() for c in value):
        return value
    raise SettingError(key, f"an owner is an e-mail address or group:NAME, got {raw!r}")


def _owners(key: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        raise SettingError(key, f"expected a list of e-mail addresses and group:NAME, got {raw!r}")
    return tuple(dict.fromkeys(owner(key, item) for item in raw))


def parse_workspace(
    name: str, document: Any, settings: SettingParser, *, where: str = "workspaces"
) -> WorkspaceSpec:
    """One workspace from its document; ``settings`` parses an override by its proxy key."""
    key = f"{where}.{name}"
    check_name(key, name)
    if not isinstance(document, Mapping):
        raise SettingError(
            key, f"expected a table with hosts, primary and standby, got {document!r}"
        )
    overrides_given = document.get("overrides", {})
    if not isinstance(overrides_given, Mapping):
        raise SettingError(f"{key}.overrides", "expected a table of settings")
    written: dict[str, Any] = {}
    for field, value in document.items():
        if field not in _FIELDS:
            _flatten(field, value, written)
    for field, value in overrides_given.items():
        _flatten(field, value, written)
    for dotted in written:
        if not any(dotted == o or dotted.startswith(f"{o}.") for o in OVERRIDABLE):
            where = key if dotted.split(".")[0] in document else f"{key}.overrides"
            raise SettingError(f"{where}.{dotted}", _unknown_field())
    if "hosts" not in document:
        raise SettingError(f"{key}.hosts", "missing: the Host names this workspace answers")
    hosts_raw = document["hosts"]
    if isinstance(hosts_raw, str) or not isinstance(hosts_raw, list | tuple) or not hosts_raw:
        raise SettingError(
            f"{key}.hosts", f"expected a non-empty list of host names, got {hosts_raw!r}"
        )
    hosts = tuple(dict.fromkeys(host_pattern(f"{key}.hosts", h) for h in hosts_raw))
    backends = []
    for role in ("primary", "standby"):
        if role not in document:
            raise SettingError(f"{key}.{role}", "missing: the backend's URL")
        backends.append(backend_url(f"{key}.{role}", document[role]))
    primary, standby = backends
    if primary.origin() == standby.origin():
        raise SettingError(f"{key}.standby", f"must differ from primary ({primary})")
    parsed = {}
    for dotted, value in written.items():
        try:
            parsed[dotted] = settings(dotted, value)
        except KeyError:
            raise SettingError(f"{key}.{dotted}", _unknown_field()) from None
        except SettingError as exc:
            raise SettingError(f"{key}.{exc.key}", exc.problem) from None
    owners = _owners(f"{key}.owners", document.get("owners", []))
    return WorkspaceSpec(name, hosts, primary, standby, parsed, written, owners)


def _unknown_field() -> str:
    return (
        "unknown key (a workspace has hosts, primary, standby, owners and"
        f" {', '.join(OVERRIDABLE)})"
    )


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    prefix = prefix.replace("-", "_")
    if isinstance(value, Mapping):
        for name, inner in value.items():
            _flatten(f"{prefix}.{name}", inner, out)
    else:
        out[prefix] = value


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *tables, leaf = dotted.split(".")
        here = nested
        for table in tables:
            here = here.setdefault(table, {})
        here[leaf] = value
    return nested
