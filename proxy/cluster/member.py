"""This proxy as one replica of a cluster (issue 16): the composition of the cluster's parts and
what they do to the workspaces.

- **Registry** (proxy.cluster.registry): the workspaces live in etcd; the control API writes
  there first (``Sites.shared``), and every replica installs each change it watches.
- **Leader** (proxy.cluster.leader): exactly one replica's machines decide; the others' only
  count health (their *view*, proxy.cluster.views) and follow the decisions they watch.
- **Decisions** (proxy.cluster.decisions): each switch of the leader's machines is written with
  its fencing token, in order per workspace; its hooks wait for that write and carry the token.
- **Contact** (proxy.cluster.presence): a replica out of contact for a lease TTL asks its peers
  and, unless every replica lost the store, stops routing (proxy.cluster.failsafe).

On every change of leadership each workspace adopts the latest decision, deciding or following:
a new leader starts from what the cluster decided, not from what its own machine thought.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from proxy.errors import StoreUnavailable
from proxy.failover import ROLES, HealthChanged, Role
from proxy.tasks import TaskSet
from proxy.workspaces.spec import WorkspaceSpec, parse_workspace

from .decisions import Decision, Decisions
from .etcd import Etcd, EtcdError
from .failsafe import verdict
from .leader import Leadership, Term
from .metrics import ClusterMetrics
from .presence import Presence
from .registry import WorkspaceRegistry
from .revocations import RevocationBook, SharedRevocations
from .views import View, ViewBoard, peer_counts

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.sites import Site, Sites
    from proxy.workspace import Workspace

__all__ = ["ClusterMember"]

log = logging.getLogger("dumont.cluster")

PEER_TIMEOUT = 0.5  # a peer's control listener answers at once, or counts as unreachable
FIRST_SYNC_RETRY = 0.2


class ClusterMember:
    def __init__(self, config: Config, sites: Sites) -> None:
        from proxy.config import workspace_setting  # the settings parser every document uses

        cluster = config.cluster
        self.config = config
        self.settings = cluster
        self.sites = sites
        self.replica = cluster.replica_id
        self.prefix = cluster.prefix
        # The URL the other replicas reach this one's control listener at: the setting, else the
        # address the listener got (proxy.server sets it before start()).
        self.advertise = cluster.advertise or f"http://{config.control_listen}"
        self.etcd = Etcd(
            cluster.endpoints,
            # Two thirds of the TTL: a store that answers in a second or two is slow, not lost.
            timeout=cluster.lease_ttl * 2 / 3,
            username=cluster.username,
            password=cluster.password,
            ssl_context=cluster.ssl_context(),
        )
        ttl = cluster.lease_ttl
        self.leadership = Leadership(
            self.etcd, f"{self.prefix}/leader", self.replica, ttl, self._leadership_changed
        )
        self.presence = Presence(
            self.etcd,
            self.prefix,
            self.replica,
            ttl,
            describe=lambda: {"control": self.advertise},
            on_contact=self._contact_changed,
        )
        self.decisions = Decisions(self.etcd, self.prefix, self.leadership, self._decided)
        self.registry = WorkspaceRegistry(
            self.etcd,
            self.prefix,
            lambda name, doc: parse_workspace(name, doc, workspace_setting, where="cluster"),
            self._registry_changed,
        )
        self.views = ViewBoard(
            self.etcd,
            self.prefix,
            self.replica,
            self._own_view,
            lambda: self.presence.lease,
            self._views_changed,
        )
        self.revocations: SharedRevocations | None = None  # with sign-in (share_sessions)
        self.metrics = ClusterMetrics()
        self.tasks = TaskSet("cluster")
        self._watches = TaskSet("cluster-watch")
        self._failsafe: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None  # reading what was decided while away
        self._writes: dict[str, asyncio.Task[int | None]] = {}
        self._synced = asyncio.Event()
        self._peer_counts: dict[str, tuple[int, dict[Role, int]]] = {}
        self.leader: str | None = None
        self.term: int | None = None
        self.peers: dict[str, str] = {}  # replica -> control URL, as last read from the store
        self.store_lost = False
        self._lost_contact = False  # since the last contact: its watches may hang
        self.last_decision_at: float | None = None
        self.metrics.decision_age.set_function(self._decision_age)
        sites.shared = self
        sites.describe_cluster = self.status
        sites.on_new_site.append(self._attach)
        for site in sites:
            self._attach(site)

    # ------------------------------------------------------------------------- lifecycle

    def share_sessions(self, book: RevocationBook) -> None:
        """Sign-in (issue 17): a logout on any replica ends the session on every replica."""
        shared = self.revocations = SharedRevocations(self.etcd, self.prefix, book)

        def signed_out(sid: str, expires: float) -> None:
            self.tasks.spawn(shared.publish(sid, expires), name="share-sign-out")

        book.on_revoke.append(signed_out)

    async def start(self, wait: float) -> None:
        """Join the cluster; wait up to ``wait`` seconds for the first sync, after which the
        workspaces route (until then they answer 503 with Retry-After)."""
        self.tasks.spawn(self._join(), name="join")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), wait)
        if not self._synced.is_set():
            log.warning(
                "%s: the store does not answer yet; not routing until it does", self.replica
            )

    async def stop(self) -> None:
        """Hand the leadership over at once and leave, so the others need not wait a TTL."""
        await self.tasks.close()  # first: a re-watch in progress must not start new watches
        await self._watches.close()
        with contextlib.suppress(EtcdError, TimeoutError):
            await asyncio.wait_for(self._leave(), self.settings.lease_ttl / 3)
        await self.etcd.close()

    async def _leave(self) -> None:
        await self.leadership.resign()
        await self.presence.leave()

    async def _join(self) -> None:
        while True:
            try:
                await self._sync()
                break
            except EtcdError as exc:
                log.info("%s: joining the cluster: %s", self.replica, exc)
                await asyncio.sleep(FIRST_SYNC_RETRY)
        self._synced.set()
        self.tasks.spawn(self.presence.run(), name="presence")
        self.tasks.spawn(self.leadership.run(), name="leadership")
        self.tasks.spawn(self.views.publish(), name="publish-view")
        self.tasks.spawn(self._observe(), name="observe")
        self._watch()
        self._halt_all(False)

    async def _sync(self) -> None:
        """Read the cluster: seed it from the TOML if it was never seeded, then the workspaces,
        the decisions and the views, each applied here."""
        await self.etcd.connect()
        await self.registry.seed(site.spec for site in self.sites)
        specs = await self.registry.load()
        for site in self.sites:
            if site.name not in specs:
                await self.sites.remove(site.name)
        for spec in specs.values():
            await self.sites.install(spec)
        for decision in (await self.decisions.load()).values():
            self._decided(decision)
        await self.views.load()
        if self.revocations is not None:
            await self.revocations.load()
        await self._read_roster()

    def _watch(self) -> None:
        self._watches.spawn(self.registry.follow(), name="watch-workspaces")
        self._watches.spawn(self.decisions.follow(), name="watch-decisions")
        self._watches.spawn(self.views.follow(), name="watch-views")
        if self.revocations is not None:
            self._watches.spawn(self.revocations.follow(), name="watch-sign-outs")

    async def _rewatch(self) -> None:
        """After a lost contact: the decisions read again and applied, then routing, then new
        watches from there (a watch stream on a member we lost may hang without ending)."""
        await self._watches.close()
        self._watches = TaskSet("cluster-watch")
        while True:
            try:
                await self.decisions.load()
                break
            except EtcdError as exc:
                log.info("%s: reading the decisions made while away: %s", self.replica, exc)
                await asyncio.sleep(FIRST_SYNC_RETRY)
        self._halt_all(False)
        self._watch()
        self._resync = None

    # ------------------------------------------------------------------- the workspaces

    def _attach(self, site: Site) -> None:
        workspace = site.workspace
        workspace.consensus = self
        workspace.observers.append(self._observer)
        decision = self.decisions.latest.get(site.name)
        term = self.leadership.leading()
        self._adopt(workspace, decision, deciding=term is not None)
        if not self._synced.is_set():
            workspace.halt(True)

    def _observer(self, event: object) -> None:
        if isinstance(event, HealthChanged):
            self.views.changed()

    def _adopt(self, workspace: Workspace, decision: Decision | None, deciding: bool) -> None:
        role = decision.active if decision is not None else None
        pinned = decision.pinned if decision is not None else False
        if decision is None and deciding:
            role = workspace.machine.active  # nothing decided yet: the leader's own machine
        workspace.adopt(role, deciding, pinned)
        if deciding:
            peers, down = self._peer_counts.get(workspace.name, (0, {"primary": 0, "standby": 0}))
            workspace.weigh_peers(peers, down)

    def _own_view(self) -> View:
        return {
            site.name: {role: site.workspace.machine.health[role].up for role in ROLES}
            for site in self.sites
        }

    def _views_changed(self) -> None:
        leading = self.leadership.leading() is not None
        for site in self.sites:
            counts = peer_counts(self.views.views, self.replica, site.name)
            if self._peer_counts.get(site.name) == counts:
                continue
            self._peer_counts[site.name] = counts
            if leading:
                site.workspace.weigh_peers(*counts)

    async def _registry_changed(self, name: str, spec: WorkspaceSpec | None) -> None:
        if spec is None:
            await self.sites.remove(name)
        else:
            await self.sites.install(spec)

    # Sites.shared: the control API's writes go to the store first.

    async def put(self, name: str, document: Mapping[str, Any]) -> None:
        try:
            await self.registry.put(name, document)
        except EtcdError as exc:
            raise StoreUnavailable(f"the cluster's store did not take it: {exc}") from None

    async def delete(self, name: str) -> None:
        try:
            await self.registry.delete(name)
        except EtcdError as exc:
            raise StoreUnavailable(f"the cluster's store did not take it: {exc}") from None

    # ---------------------------------------------------------------------- decisions

    def _leadership_changed(self, term: Term | None) -> None:
        self.metrics.leader.set(1 if term is not None else 0)
        if term is None:
            self.leader = None if self.leader == self.replica else self.leader
            for site in self.sites:
                self._adopt(site.workspace, self.decisions.latest.get(site.name), False)
            return
        self.tasks.spawn(self._take_office(term), name="take-office")

    async def _take_office(self, term: Term) -> None:
        """Read every decision made so far before deciding anything (until then the machines
        still only follow), then let each workspace's machine decide from its decision."""
        while self.leadership.leading() == term:
            try:
                await self.decisions.load()
                break
            except EtcdError as exc:
                log.warning("%s: reading the decisions before leading: %s", self.replica, exc)
                await asyncio.sleep(FIRST_SYNC_RETRY)
        if self.leadership.leading() != term:
            return
        self.leader, self.term = self.replica, term.revision
        self.metrics.term.set(term.revision)
        for site in self.sites:
            self._adopt(site.workspace, self.decisions.latest.get(site.name), True)

    def _decided(self, decision: Decision) -> None:
        self.last_decision_at = time.monotonic()
        if self.leadership.leading() is not None:
            return  # its own, coming back
        site = self.sites.by_name.get(decision.workspace)
        if site is not None:
            self._adopt(site.workspace, decision, False)

    # Workspace.consensus (proxy.workspace.Consensus)

    def publish(self, workspace: Workspace) -> None:
        machine = workspace.machine
        name = workspace.name
        earlier = self._writes.get(name)
        self._writes[name] = self.tasks.spawn(
            self._write(name, machine.active, machine.epoch, machine.pinned_to_standby, earlier),
            name=f"decide-{name}",
        )

    async def fencing_token(self, workspace: Workspace) -> int | None:
        write = self._writes.get(workspace.name)
        return None if write is None else await write

    async def _write(
        self,
        name: str,
        role: Role | None,
        epoch: int,
        pinned: bool,
        earlier: asyncio.Task[int | None] | None,
    ) -> int | None:
        if earlier is not None:  # in order: a later decision never lands before an earlier one
            with contextlib.suppress(Exception):
                await earlier
        while self.leadership.leading() is not None:
            try:
                decision = await self.decisions.publish(name, role, epoch, pinned)
            except EtcdError as exc:
                self.metrics.decisions.labels("failed").inc()
                log.warning("decision for %s not written yet: %s", name, exc)
                await asyncio.sleep(FIRST_SYNC_RETRY)
                continue
            if decision is None:
                break
            self.metrics.decisions.labels("written").inc()
            log.info(
                "decided %s -> %s (token %d)",
                name,
                role or "nothing",
                decision.token,
                extra={"fields": {"event": "decision", "workspace": name, "token": decision.token}},
            )
            return decision.token
        self.metrics.decisions.labels("refused").inc()
        return None

    # ------------------------------------------------------------------------- contact

    def _contact_changed(self, in_contact: bool) -> None:
        self.metrics.in_contact.set(1 if in_contact else 0)
        if in_contact:
            if self._failsafe is not None:
                self._failsafe.cancel()
                self._failsafe = None
            self._set_store_lost(False)
            if not self._lost_contact:
                self._halt_all(False)
                return
            # Back after a loss: decisions made meanwhile may not have reached this replica (its
            # watch was on a dead link, and is caught up only after a new one starts), so it
            # reads them before routing again; routing first sent users to a machine the cluster
            # had already left, for the watch's round trip (test_replicas_bed.py).
            self._lost_contact = False
            if self._resync is not None:
                self._resync.cancel()
            self._resync = self.tasks.spawn(self._rewatch(), name="rewatch")
            return
        self._lost_contact = True
        if self._resync is not None:  # lost again before it read them: the failsafe decides
            self._resync.cancel()
            self._resync = None
        if self._failsafe is None:
            self._failsafe = self.tasks.spawn(self._run_failsafe(), name="failsafe")

    async def _run_failsafe(self) -> None:
        lost_since = time.monotonic()
        period = self.settings.lease_ttl / 3
        while True:
            ages = await asyncio.gather(*(self._ask(url) for url in self.peers.values()))
            found = verdict(
                time.monotonic() - lost_since,
                self.presence.contact_age(),
                ages,
                period,
                self.settings.store_lost_grace,
            )
            self._set_store_lost(found.store_lost)
            if self._halt_all(not found.route):
                log.warning("%s: %s", self.replica, found.why)
            await asyncio.sleep(period)

    async def _ask(self, control: str) -> float | None:
        """A peer's contact age (proxy.cluster.failsafe); None when it does not answer."""
        headers = {}
        if self.config.admin_token:
            headers["Authorization"] = f"Bearer {self.config.admin_token}"
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    control + "/admin/cluster/contact",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
                ) as response,
            ):
                answer = await response.json()
                age = answer["contact_age"]
                return float("inf") if age is None else float(age)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError, TypeError):
            return None

    def _set_store_lost(self, lost: bool) -> None:
        if lost != self.store_lost:
            self.store_lost = lost
            self.metrics.store_lost.set(1 if lost else 0)
            if lost:
                log.error(
                    "%s: no replica reaches the store: routing by the last decisions, no switch",
                    self.replica,
                    extra={"fields": {"event": "store_lost"}},
                )

    def _halt_all(self, halted: bool) -> bool:
        """Every workspace stops (or resumes) routing; True when that changed anything."""
        changed = False
        for site in self.sites:
            changed |= site.workspace.halted != halted
            site.workspace.halt(halted)
        self.metrics.halted.set(1 if halted else 0)
        return changed

    async def _observe(self) -> None:
        """Who leads, who is there (the peers the failsafe asks), and the store's round trip."""
        while True:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            if not self.presence.in_contact():
                continue
            with contextlib.suppress(EtcdError):
                await self._read_roster()

    async def _read_roster(self) -> None:
        started = time.monotonic()
        held = await self.etcd.get(f"{self.prefix}/leader")
        self.metrics.round_trip.set(time.monotonic() - started)
        self.leader = None if held is None else held.value.decode(errors="replace")
        if held is not None:
            self.term = held.create_revision
            self.metrics.term.set(held.create_revision)
        _, kvs = await self.etcd.get_prefix(f"{self.prefix}/replicas/")
        peers = {}
        for kv in kvs:
            replica = kv.key.rsplit("/", 1)[-1]
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if replica != self.replica:
                    peers[replica] = str(json.loads(kv.value)["control"])
        self.peers = peers
        self.metrics.replicas.set(len(kvs))

    def _decision_age(self) -> float:
        seen = self.last_decision_at
        return -1.0 if seen is None else time.monotonic() - seen

    # -------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """GET /admin/cluster, the dashboard and ``dumont-proxy status``."""
        return {
            "replica": self.replica,
            "leader": self.leader,
            "leading": self.leadership.leading() is not None,
            "term": self.term,
            "in_contact": self.presence.in_contact(),
            "store_lost": self.store_lost,
            "routing": not any(site.workspace.halted for site in self.sites),
            "peers": dict(self.peers),
            "views": self.views.views,
            "decisions": {
                name: decision.as_json() for name, decision in self.decisions.latest.items()
            },
        }
