"""Every workspace the proxy serves, each a :class:`Site`, and the one table that says which Host
reaches which (issue 15).

A Site is one workspace with everything around it: its failover machine and health checks
(proxy.workspace), its board (metrics, dashboard state, park status), its park actions and the view
the transition page and the watcher follow, and the two destinations the data plane forwards to.
Sites share nothing that one workspace's trouble could hold up: a switch, a hung hook or a flooded
backend stays inside its own Site.

:class:`Sites` creates, replaces and removes them while the proxy serves. Each change is checked
whole before anything is touched (a bad document or a host another workspace has is a BadRequest
and changes nothing), written to the state directory when there is one, and only then applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from yarl import URL

from .config import Config, workspace_config, workspace_setting
from .dashboard import Board, build_board
from .dataplane.exchange import Destination
from .errors import BadRequest, ConfigError, Conflict, HTTPProblem, NotFound
from .failover import Role
from .health import ProbeSchedule
from .ide_view import IdeView
from .metrics import render_by_workspace
from .observe import NullTrafficObserver, TrafficObserver
from .pages import TipBook
from .park_actions import ParkActions
from .settings import SettingError
from .workspace import CLOSE_SHUTDOWN, CLOSE_SWITCHED, Workspace
from .workspaces.hosts import HostTable
from .workspaces.spec import WorkspaceSpec, check_name, parse_workspace
from .workspaces.store import StoreError, WorkspaceStore

__all__ = ["SharedRegistry", "Site", "Sites"]

log = logging.getLogger("dumont.workspaces")


class SharedRegistry(Protocol):
    """Where the workspaces live when proxy replicas share them (proxy.cluster): the control
    API's changes are written there first (an HTTPProblem when the store does not take them:
    nothing is applied), then here, and reach the other replicas through :meth:`Sites.install`
    and :meth:`Sites.remove`."""

    async def put(self, name: str, document: Mapping[str, Any]) -> None: ...

    async def delete(self, name: str) -> None: ...


class Site:
    """One workspace and everything that serves it."""

    def __init__(
        self,
        spec: WorkspaceSpec,
        config: Config,
        tips: TipBook,
        schedule: ProbeSchedule | None,
        workspace: Workspace | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
        self.workspace = workspace or Workspace(config, name=spec.name, schedule=schedule)
        self.router: Workspace = self.workspace  # the data plane's Route
        self.switch_wait = config.switch_wait
        # Its own tip cards (and their A/B counts) when its overrides give [pages] tips.
        own_tips = any(key.startswith("pages.") for key in spec.overrides)
        self.tips = TipBook.for_config(config.pages) if own_tips else tips
        self.board: Board = build_board(self.workspace, self.tips)
        self.workspace.observers.extend(self.board.observers())
        self.park = ParkActions(self.workspace, self.board.park)  # issue 18: keep it, resume
        self.view = IdeView(self.workspace, self.park)  # what the watcher follows
        self.traffic: TrafficObserver = self.board.metrics or NullTrafficObserver()
        # What the data plane forwards to: a navigation does not wait for a switch, a call does.
        self.navigation = Destination(self.workspace, None, 0.0, self.traffic)
        self.call = Destination(self.workspace, None, config.switch_wait, self.traffic)
        # Two flushes at once would stop and restart the GPU's lsyncd under each other.
        self.switchover_lock = asyncio.Lock()
        self._start_handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.workspace.start()

    def start_later(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if delay <= 0:
            self.start()
        else:
            self._start_handle = loop.call_later(delay, self.start)

    async def close(self, code: int = CLOSE_SHUTDOWN, drain: float = 0.0) -> None:
        """WebSockets end with ``code``; requests in flight get ``drain`` seconds to finish
        (no new ones reach this Site: it left the Host table first)."""
        if self._start_handle is not None:
            self._start_handle.cancel()
        await self.workspace.close_websockets(code)
        await self.park.close()
        await self.workspace.drain(drain)

    def describe(self) -> dict[str, Any]:
        """The control API's view of the workspace (GET /admin/workspaces)."""
        machine = self.workspace.machine
        last = machine.history[-1] if machine.history else None
        return {
            "name": self.name,
            **self.spec.document(),
            "state": str(machine.state),
            "active": machine.active,
            "epoch": machine.epoch,
            "healthy": {role: health.up for role, health in machine.health.items()},
            "last_switch": None
            if last is None
            else {"kind": last.kind, "to": last.to_role, "outcome": last.outcome},
        }


class Sites:
    """The workspaces by name and by Host, changed by the control API while traffic flows."""

    def __init__(
        self,
        config: Config,
        specs: tuple[WorkspaceSpec, ...],
        tips: TipBook,
        *,
        default_workspace: Workspace | None = None,
    ) -> None:
        self.config = config
        self.tips = tips
        self.schedule = ProbeSchedule()  # one timer for every backend's checks
        # A proxy given named workspaces labels every series by workspace; one started with
        # --primary/--standby alone exposes exactly the series it always did.
        self.named = bool(config.workspaces) or config.state_dir is not None
        self.store: WorkspaceStore | None = None
        # Set by proxy.cluster: the replicas' shared registry, and who hears of each new Site.
        self.shared: SharedRegistry | None = None
        self.describe_cluster: Callable[[], dict[str, Any]] | None = None
        self.on_new_site: list[Callable[[Site], None]] = []
        specs = self._with_stored(specs) if config.state_dir is not None else specs
        self.by_name: dict[str, Site] = {}
        for spec in specs:
            given = default_workspace if spec.name == "default" else None
            self.by_name[spec.name] = self._site(spec, given)
        self.hosts = self._table(self.by_name.values())
        # Series that belong to the proxy, not to a workspace (sign-in's dumont_auth_*).
        self.process_metrics: list[Callable[[], bytes]] = []
        fallback = config.default_workspace
        if fallback is not None and fallback not in self.by_name:
            raise ConfigError("default_workspace", f"no workspace {fallback!r}")
        self.started = False

    def _with_stored(self, configured: tuple[WorkspaceSpec, ...]) -> tuple[WorkspaceSpec, ...]:
        """The state directory's workspaces, seeded with the configured ones it has never seen.
        Stored beats configured: what the API changed survives a restart."""
        assert self.config.state_dir is not None
        try:
            self.store = WorkspaceStore(self.config.state_dir)
            stored, deleted = self.store.load()
        except StoreError as exc:
            raise ConfigError("state_dir", str(exc)) from None
        found: dict[str, WorkspaceSpec] = {}
        for name, document in stored.items():
            try:
                found[name] = parse_workspace(name, document, workspace_setting, where="state_dir")
            except SettingError as exc:
                raise ConfigError(exc.key, f"{exc.problem} (in {self.store.path})") from None
        for spec in configured:
            if spec.name in found or spec.name in deleted:
                if spec.name in found and spec.document() != found[spec.name].document():
                    log.warning(
                        "workspace %s: the state directory's version wins over the TOML's"
                        " (change it with PUT /admin/workspaces/%s)",
                        spec.name,
                        spec.name,
                    )
                continue
            found[spec.name] = spec
            if spec.name != "default":  # the flags' workspace is the flags', every start
                try:
                    self.store.put(spec.name, spec.document())
                except StoreError as exc:
                    raise ConfigError("state_dir", str(exc)) from None
        try:
            HostTable(found.values(), self.config.default_workspace)
        except SettingError as exc:
            raise ConfigError(exc.key, exc.problem) from None
        return tuple(found.values())

    def _site(self, spec: WorkspaceSpec, workspace: Workspace | None = None) -> Site:
        site = Site(spec, workspace_config(self.config, spec), self.tips, self.schedule, workspace)
        for hear in self.on_new_site:
            hear(site)
        return site

    def _table(self, sites: Iterable[Site]) -> HostTable:
        return HostTable((site.spec for site in sites), self.config.default_workspace)

    # ------------------------------------------------------------------------ lookups

    def __iter__(self) -> Iterator[Site]:
        return iter(list(self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    def for_host(self, raw: bytes | str | None) -> Site | None:
        name = self.hosts.lookup(raw)
        return None if name is None else self.by_name.get(name)

    def board_for(self, request: web.Request) -> Board:
        """The dashboard's BoardSource: /dashboard/workspaces/NAME/..., else "default"."""
        return self.get(request.match_info.get("workspace", "default")).board

    def render_metrics(self) -> bytes | None:
        if not self.config.metrics:
            return None
        if not self.named:
            default = self.by_name.get("default")
            metrics = None if default is None else default.board.metrics
            body = b"" if metrics is None else metrics.render()
        else:
            parts = [(s.name, s.board.metrics) for s in self if s.board.metrics is not None]
            body = render_by_workspace(parts)
        return b"".join([body, *(render() for render in self.process_metrics)])

    def cluster_status(self) -> dict[str, Any] | None:
        """The dashboard's replicas card: proxy.cluster's status, None when running alone."""
        return None if self.describe_cluster is None else self.describe_cluster()

    def get(self, name: str) -> Site:
        site = self.by_name.get(name)
        if site is None:
            raise NotFound(f"no workspace {name!r}")
        return site

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Every workspace's checks, their first ones spread over one health interval: two
        thousand first probes at once time out against each other, and a workspace whose
        primary's first probe timed out would start on its standby."""
        self.started = True
        loop = asyncio.get_running_loop()
        count = len(self.by_name)
        for index, site in enumerate(self.by_name.values()):
            site.start_later(loop, index * site.config.health.interval / count)

    async def close_websockets(self) -> None:
        for site in self:
            await site.workspace.close_websockets()

    async def close(self) -> None:
        for site in self:
            await site.close()
        self.schedule.close()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ the control API

    async def put(self, name: str, document: Mapping[str, Any]) -> tuple[Site, bool]:
        """Create or replace; replacing with the same backends and overrides keeps the failover
        state (only the hosts change). Returns the Site and whether it is new."""
        spec = self._parse(name, document)
        try:
            table = self._table_with(spec)
        except SettingError as exc:
            raise BadRequest(f"{exc.key}: {exc.problem}") from None
        await self._save(name, spec)
        return await self._install(spec, table)

    async def install(self, spec: WorkspaceSpec) -> None:
        """A workspace the shared registry holds (another replica's change, or this one's coming
        back): applied as is, or skipped with one line when its hosts collide with another's."""
        try:
            table = self._table_with(spec)
        except SettingError as exc:
            log.error("workspace %s skipped: %s: %s", spec.name, exc.key, exc.problem)
            return
        await self._install(spec, table)

    def _table_with(self, spec: WorkspaceSpec) -> HostTable:
        others = [s.spec for s in self.by_name.values() if s.name != spec.name]
        return HostTable([*others, spec], self.config.default_workspace)

    async def _install(self, spec: WorkspaceSpec, table: HostTable) -> tuple[Site, bool]:
        name = spec.name
        old = self.by_name.get(name)
        if old is not None and old.spec == spec:
            return old, False
        if (
            old is not None
            and old.spec.same_backends(spec)
            and (old.spec.overrides == spec.overrides)
        ):
            old.spec = spec
            self.hosts = table
            log.info("workspace %s now answers %s", name, ", ".join(spec.hosts))
            return old, False
        if old is not None and old.spec.overrides == spec.overrides:
            # One machine replaced (PUT .../backends/ROLE on another replica): as replace_backend
            # does here, the failover state stays.
            moved = [r for r in ("primary", "standby") if old.spec.url(r) != spec.url(r)]
            if len(moved) == 1:
                role: Role = "primary" if moved == ["primary"] else "standby"
                await old.workspace.replace_backend(role, spec.url(role))
                old.spec = spec
                self.hosts = table
                return old, False
        site = self._site(spec)
        self.by_name[name] = site
        self.hosts = table
        if self.started:
            site.start()
        log.warning(
            "workspace %s %s: %s, primary %s, standby %s",
            name,
            "replaced" if old else "created",
            ", ".join(spec.hosts),
            spec.primary,
            spec.standby,
        )
        if old is not None:
            # 1012: the browser reconnects, to the new backends.
            await old.close(CLOSE_SWITCHED, drain=self.config.shutdown_timeout)
        return site, old is None

    async def replace_backend(self, name: str, role: Role, url: URL) -> Site:
        """PUT .../backends/ROLE (a replacement GPU): the workspace's document says so too, in
        the API's answers and in the state directory, so a restart keeps the new machine."""
        site = self.get(name)
        old = site.spec
        if role == "primary":
            spec = dataclasses.replace(old, primary=url)
        else:
            spec = dataclasses.replace(old, standby=url)
        if spec.primary.origin() == spec.standby.origin():
            other = "standby" if role == "primary" else "primary"
            raise Conflict(f"{url} is already the {other}")
        if name != "default" or self.config.primary is None:  # the flags' one is the flags'
            await self._save(name, spec)
        site.spec = spec  # first: the store's echo of this change must find it done
        await site.workspace.replace_backend(role, url)
        return site

    async def delete(self, name: str) -> None:
        self.get(name)
        if self.shared is not None:
            await self.shared.delete(name)
        elif self.store is not None:
            self._store_call(self.store.delete, name)
        await self.remove(name)

    async def remove(self, name: str) -> None:
        """Stop serving ``name`` (deleted here, or in the shared registry by another replica)."""
        site = self.by_name.pop(name, None)
        if site is None:
            return
        self.hosts = self._table(self.by_name.values())
        log.warning("workspace %s deleted", name)
        await site.close(CLOSE_SHUTDOWN, drain=self.config.shutdown_timeout)

    def _parse(self, name: str, document: Mapping[str, Any]) -> WorkspaceSpec:
        try:
            check_name("name", name)
            return parse_workspace(name, document, workspace_setting)
        except SettingError as exc:
            raise BadRequest(f"{exc.key}: {exc.problem}") from None

    async def _save(self, name: str, spec: WorkspaceSpec) -> None:
        if self.shared is not None:
            await self.shared.put(name, spec.document())
        elif self.store is not None:
            self._store_call(self.store.put, name, spec.document())

    @staticmethod
    def _store_call(call: Any, *args: Any) -> None:
        try:
            call(*args)
        except StoreError as exc:  # the change is refused whole: nothing was applied yet
            raise HTTPProblem(f"state directory: {exc}") from None
