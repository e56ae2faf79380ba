"""Which workspace a request's Host names: exact names, then ``*.suffix`` wildcards (the longest
suffix wins), then the catch-all, if one workspace has it.

Built whole from the specs on every change and then only read, so the data plane's lookup is a
few dict probes. Answers are memoised per raw Host value (the data plane looks up every request);
the memo is bounded, because a client chooses what it sends as Host.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.settings import SettingError

from .spec import CATCH_ALL, WorkspaceSpec

__all__ = ["HostTable", "normalise_host"]

MEMO_LIMIT = 4096


def normalise_host(raw: bytes | str | None) -> str | None:
    """The name a Host header carries: lower case, no port, no trailing dot; None for an address
    (which names no workspace) or nothing."""
    if raw is None:
        return None
    host = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    host = host.strip().lower()
    if host.startswith("["):
        return None  # an IPv6 literal
    host = host.rpartition(":")[0] if ":" in host else host
    host = host.rstrip(".")
    if not host or host.replace(".", "").isdigit():
        return None  # empty, or an IPv4 address
    return host


class HostTable:
    """``fallback``: the workspace a Host nobody names reaches (default_workspace), unless one
    claims the catch-all pattern itself."""

    def __init__(self, specs: Iterable[WorkspaceSpec] = (), fallback: str | None = None) -> None:
        self.exact: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}  # ".example.org" -> name, from "*.example.org"
        self.catch_all: str | None = None
        self._memo: dict[bytes | str | None, str | None] = {}
        for spec in specs:
            self.claim(spec)
        if fallback is not None:
            if self.catch_all not in (None, fallback):
                raise SettingError(
                    "default_workspace",
                    f"workspace {self.catch_all!r} already answers every Host ('*')",
                )
            self.catch_all = fallback

    def claim(self, spec: WorkspaceSpec) -> None:
        """Add ``spec``'s hosts; a host another workspace already has is a SettingError."""
        for pattern in spec.hosts:
            owner = self.owner(pattern)
            if owner is not None and owner != spec.name:
                raise SettingError(
                    f"workspaces.{spec.name}.hosts",
                    f"{pattern!r} is already claimed by workspace {owner!r}",
                )
        for pattern in spec.hosts:
            if pattern == CATCH_ALL:
                self.catch_all = spec.name
            elif pattern.startswith("*."):
                self.suffixes[pattern[1:]] = spec.name
            else:
                self.exact[pattern] = spec.name
        self._memo.clear()

    def owner(self, pattern: str) -> str | None:
        """Who holds exactly this pattern (not who a Host would reach)."""
        if pattern == CATCH_ALL:
            return self.catch_all
        if pattern.startswith("*."):
            return self.suffixes.get(pattern[1:])
        return self.exact.get(pattern)

    def lookup(self, raw: bytes | str | None) -> str | None:
        """The workspace's name for a raw Host value, or None."""
        try:
            return self._memo[raw]
        except KeyError:
            pass
        found = self._resolve(normalise_host(raw))
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[raw] = found
        return found

    def _resolve(self, host: str | None) -> str | None:
        if host is None:
            return self.catch_all
        if (name := self.exact.get(host)) is not None:
            return name
        dot = host.find(".")
        while dot != -1:  # a.b.example.org: try .b.example.org, then .example.org, then .org
            if (name := self.suffixes.get(host[dot:])) is not None:
                return name
            dot = host.find(".", dot + 1)
        return self.catch_all
