"""A pair's workspace at the proxy (issue 15): one proxy routes many pairs, each by its Host names.

The workspace of pair NAME is named NAME and is made of three things provisioning knows:

- its hosts: what ``pair create NAME --hosts ...`` recorded in the store, else ``NAME.BASE_DOMAIN``
  when a base domain is set;
- its primary: the GPU's code-server, through the port Vast maps to ``--code-server-port``;
- its standby: the standby VM's code-server on its external IP, same port (the start-up script
  runs it there).

A pair is registered by name only when it has hosts; without any (no ``--hosts`` ever given, no
base domain) it is left to a single-workspace proxy, whose ``default`` workspace is configured by
flags. ``default`` is never registered, replaced or pruned from here.

``pair create`` registers and then waits until the proxy serves the workspace; ``pair destroy``
removes the registration before the machines (PairService's ``before_destroy``); ``pair
reconcile`` puts back a missing or stale one and removes those of destroyed pairs. Every change
is one ``PUT`` or ``DELETE``, which the proxy applies whole or refuses whole (400 with the field),
so a failure never leaves half a registration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provisioning.errors import ProxyAdminError, UsageError
from provisioning.progress import Progress, quiet
from provisioning.proxy_admin import (
    delete_workspace,
    get_workspace,
    list_workspaces,
    put_workspace,
)
from provisioning.replacement import primary_url
from provisioning.store import Pair, PairState

if TYPE_CHECKING:
    from provisioning.gcp import StandbyVm
    from provisioning.pairing import PairService

__all__ = [
    "DEFAULT_WORKSPACE",
    "ProxyWorkspaces",
    "Registration",
    "WorkspaceChange",
    "check_workspace_name",
    "hosts_for",
    "normalise_host",
    "reconcile_workspaces",
    "serving_role",
    "standby_url",
]

DEFAULT_WORKSPACE = "default"  # the proxy's single-workspace flags; matches any Host
_WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # the proxy's rule
# The proxy's label rule (it accepts the underscores some internal names carry).
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def check_workspace_name(name: str) -> str:
    if name == DEFAULT_WORKSPACE:
        raise UsageError(
            "pair 'default' cannot have a workspace of its own: the proxy's 'default' workspace"
            " is its single-workspace flags"
        )
    if not _WORKSPACE_NAME.match(name):
        raise UsageError(f"bad workspace name {name!r}: a-z, 0-9 and -, at most 63")
    return name


def normalise_host(host: str) -> str:
    """An exact name (``alice.ide.example.com``) or a wildcard (``*.alice.example.org``), in
    lower case, checked as the proxy checks it, before anything is rented: the proxy matches
    case-insensitively and ignores the port, so one is refused rather than silently dropped, and
    an address never names a workspace (it would be anyone's who types the IP)."""
    name = host.strip().lower().rstrip(".")
    bare = name.removeprefix("*.")
    if "://" in name or ":" in name or "/" in name:
        raise UsageError(f"bad host {host!r}: a name only, without scheme, port or path")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        raise UsageError(f"bad host {host!r}: an address is no workspace's name")
    if not bare or len(bare) > 253 or not all(_LABEL.match(label) for label in bare.split(".")):
        raise UsageError(f"bad host {host!r}: expected a DNS name or *.suffix")
    return name


def hosts_for(
    name: str,
    given: list[str],
    *,
    stored: tuple[str, ...] | None,
    base_domain: str | None,
) -> tuple[str, ...]:
    """The workspace's hosts: given now, else recorded by an earlier create, else NAME.BASE."""
    if given:
        hosts = given
    elif stored:
        hosts = list(stored)
    elif base_domain:
        hosts = [f"{name}.{base_domain.strip().lstrip('.')}"]
    else:
        raise UsageError(
            f"pair {name} has no hosts for the proxy: pass --hosts (e.g. {name}.ide.example.com)"
            " or set base-domain; or unset proxy-control to only provision"
        )
    return tuple(dict.fromkeys(normalise_host(h) for h in hosts))  # ordered, no duplicates


def standby_url(standby: StandbyVm, code_server_port: int) -> str | None:
    """The standby's code-server as the proxy reaches it; None while the VM has no address."""
    return f"http://{standby.external_ip}:{code_server_port}" if standby.external_ip else None


def serving_role(workspace: Mapping[str, Any]) -> str | None:
    """The backend the proxy serves the workspace from, once that backend passed its checks."""
    active = workspace.get("active")
    if active not in ("primary", "standby"):
        return None
    # A switch in progress has an active role too; only a settled "serving_*" state serves.
    if workspace.get("state") not in (None, f"serving_{active}"):
        return None
    healthy = workspace.get("healthy")  # the proxy's per-role view, when it sends one
    if isinstance(healthy, dict) and healthy.get(active) is False:
        return None
    return str(active)


def _same_url(a: object, b: object) -> bool:
    return str(a or "").rstrip("/").lower() == str(b or "").rstrip("/").lower()


@dataclass(frozen=True)
class Registration:
    """What the proxy should hold for one pair."""

    name: str
    hosts: tuple[str, ...]
    primary: str
    standby: str

    def stale_fields(self, current: Mapping[str, Any]) -> list[str]:
        """The fields where the proxy's workspace differs from this one."""
        stale = []
        hosts = current.get("hosts")
        have = {str(h).lower() for h in hosts} if isinstance(hosts, list) else set()
        if have != set(self.hosts):
            stale.append("hosts")
        if not _same_url(current.get("primary"), self.primary):
            stale.append("primary")
        if not _same_url(current.get("standby"), self.standby):
            stale.append("standby")
        return stale


@dataclass(frozen=True)
class WorkspaceChange:
    """One line of ``pair reconcile``'s report about a workspace."""

    name: str
    action: str
    problem: bool = False  # still wrong after reconcile: the command exits 1

    def __str__(self) -> str:
        return f"{self.name}: workspace {self.action}"


class ProxyWorkspaces:
    """The proxy's workspace endpoints with one command's control URL, token and pacing."""

    def __init__(
        self,
        control_url: str,
        token: str,
        *,
        progress: Progress = quiet,
        poll_interval: float = 0.5,
    ) -> None:
        self.control_url = control_url
        self._token = token
        self._progress = progress
        self._poll_interval = poll_interval

    async def workspaces(self) -> dict[str, dict[str, Any]]:
        workspaces = await list_workspaces(self.control_url, self._token)
        return {str(w.get("name")): w for w in workspaces}

    async def check_hosts_free(self, name: str, hosts: tuple[str, ...]) -> None:
        """Before anything is rented: the proxy answers, and no other workspace has these hosts
        (the PUT would be refused after the machines cost money)."""
        for other, workspace in (await self.workspaces()).items():
            theirs = {str(h).lower() for h in workspace.get("hosts") or ()}
            taken = sorted(theirs & set(hosts))
            if other != name and taken:
                raise UsageError(f"host {taken[0]} belongs to workspace {other!r} at the proxy")

    async def put(
        self, wanted: Registration, current: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        # An operator's overrides (health, failback, hooks) survive a re-registration.
        overrides = current.get("overrides") if current else None
        return await put_workspace(
            self.control_url,
            self._token,
            wanted.name,
            hosts=list(wanted.hosts),
            primary=wanted.primary,
            standby=wanted.standby,
            overrides=overrides if isinstance(overrides, dict) else None,
        )

    async def register(self, wanted: Registration, *, serve_timeout: float) -> str:
        """PUT the workspace (created or replaced, never duplicated: the name is the key) and
        wait until the proxy serves it; returns the role it serves from."""
        current = await get_workspace(self.control_url, self._token, wanted.name)
        try:
            _, created = await self.put(wanted, current)
        except ProxyAdminError as exc:
            if exc.status != 400:
                raise
            raise ProxyAdminError(
                f"pair {wanted.name} is ready but its workspace is not registered: {exc};"
                f" fix it and run pair create {wanted.name} again",
                status=400,
            ) from exc
        verb = "registered" if created else "re-registered"
        self._progress(
            f"{verb} workspace {wanted.name} at the proxy: {', '.join(wanted.hosts)}"
            f" -> {wanted.primary} (standby {wanted.standby})"
        )
        return await self.wait_serving(wanted.name, timeout=serve_timeout)

    async def wait_serving(self, name: str, *, timeout: float) -> str:
        self._progress(f"waiting for the proxy to serve workspace {name}")
        deadline = time.monotonic() + timeout
        while True:
            workspace = await get_workspace(self.control_url, self._token, name)
            if workspace is None:
                raise ProxyAdminError(f"workspace {name} was removed from the proxy meanwhile")
            role = serving_role(workspace)
            if role is not None:
                return role
            if time.monotonic() > deadline:
                raise ProxyAdminError(
                    f"workspace {name} is registered, but the proxy did not serve it within"
                    f" {timeout:g} s (state {workspace.get('state')}): it will once a backend"
                    " passes its health checks"
                )
            await asyncio.sleep(self._poll_interval)

    async def unregister(self, name: str) -> bool:
        """DELETE the workspace; False when the proxy did not have it (already gone)."""
        gone = await delete_workspace(self.control_url, self._token, name)
        self._progress(
            f"removed workspace {name} from the proxy"
            if gone
            else f"workspace {name} was not registered at the proxy"
        )
        return gone


async def _wanted(
    service: PairService,
    pair: Pair,
    hosts: tuple[str, ...],
    current: Mapping[str, Any] | None,
    code_server_port: int,
) -> Registration | str:
    """The registration the pair should have, or why it cannot be worked out now. A machine that
    is missing for now (a parked pair's destroyed GPU) keeps the address the proxy has."""
    gpu = await service.current_gpu(pair)
    primary = primary_url(gpu, code_server_port) if gpu is not None else None
    vm = await service.standbys.find(pair.standby_name)
    standby = standby_url(vm, code_server_port) if vm is not None else None
    primary = primary or (str(current["primary"]) if current and current.get("primary") else None)
    standby = standby or (str(current["standby"]) if current and current.get("standby") else None)
    if primary is None:
        return f"the pair has no GPU now ({pair.state.value})"
    if standby is None:
        return "the standby VM has no address now"
    return Registration(pair.id, hosts, primary, standby)


async def reconcile_workspaces(
    proxy: ProxyWorkspaces,
    service: PairService,
    *,
    pair_id: str | None,
    base_domain: str | None,
    code_server_port: int,
    prune: bool,
) -> list[WorkspaceChange]:
    """Compare the pairs in the store with the proxy's workspaces and repair: register missing
    ones, replace stale ones (hosts or a backend differ), remove those of destroyed pairs, and
    with ``prune`` every workspace no pair accounts for. Correct ones are left alone."""
    store = service.store
    pairs = [store.get(pair_id)] if pair_id else store.list(include_destroyed=True)
    managed: list[tuple[Pair, tuple[str, ...]]] = []
    for pair in pairs:
        stored = store.hosts(pair.id)
        if pair.id != DEFAULT_WORKSPACE and (stored or base_domain):
            managed.append((pair, hosts_for(pair.id, [], stored=stored, base_domain=base_domain)))
    if not managed and not prune:
        return []  # no pair is registered by name: a single-workspace proxy; nothing to ask
    registered = await proxy.workspaces()
    changes: list[WorkspaceChange] = []
    for pair, hosts in managed:
        change = await _reconcile_one(
            proxy, service, pair, hosts, registered.get(pair.id), code_server_port
        )
        if change is not None:
            changes.append(change)
    if prune and pair_id is None:
        live = {pair.id for pair in store.list()}
        for name in sorted(set(registered) - live - {DEFAULT_WORKSPACE}):
            await proxy.unregister(name)
            changes.append(WorkspaceChange(name, "pruned (no such pair in the store)"))
    return changes


async def _reconcile_one(
    proxy: ProxyWorkspaces,
    service: PairService,
    pair: Pair,
    hosts: tuple[str, ...],
    current: Mapping[str, Any] | None,
    code_server_port: int,
) -> WorkspaceChange | None:
    if pair.state in (PairState.DESTROYING, PairState.DESTROYED):
        if current is None:
            return None
        await proxy.unregister(pair.id)
        return WorkspaceChange(pair.id, f"removed (pair {pair.state.value})")
    if pair.state is PairState.CREATING:
        return None  # create registers it once both machines exist
    wanted = await _wanted(service, pair, hosts, current, code_server_port)
    if isinstance(wanted, str):
        # Only when the proxy has nothing either: a known address is kept over an unknown one.
        return WorkspaceChange(pair.id, f"not registered: {wanted}", problem=True)
    stale = wanted.stale_fields(current) if current is not None else []
    if current is not None and not stale:
        return None
    try:
        await proxy.put(wanted, current)
    except ProxyAdminError as exc:
        if exc.status != 400:
            raise  # unreachable, bad token: every other workspace would fail the same way
        return WorkspaceChange(pair.id, f"refused by the proxy: {exc}", problem=True)
    if current is None:
        return WorkspaceChange(pair.id, f"registered ({', '.join(hosts)})")
    return WorkspaceChange(pair.id, f"updated ({', '.join(stale)})")
