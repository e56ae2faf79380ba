"""The overview of every workspace (issue 15): one compact row each, for ``/dashboard`` and
``dumont-proxy status``.

A row holds what someone scanning a thousand workspaces needs to spot the one in trouble: its
state, who serves, both backends' health, the last switch, the sync, the GPU's park phase and what
the standby saved. It carries no latency history and no switch list (the workspace's own page has
those), so a row is a few hundred bytes and building one is a pass over a few fields.

``attention`` names what deserves a look, in words (nothing serves, the standby serves while the
GPU is not parked, a backend down, the sync degraded, a failed park or resume, a missing standby
VM); the page's "needs attention" filter and the totals count it. A parked GPU is a plan, not
trouble: its standby serving and its primary down are not flagged.

``overview()`` filters (a name or host fragment, attention only), pages (``offset``, ``limit``)
and counts over every workspace, matching or not, so the masthead never depends on the page shown.
Only the page's rows are built whole. Every other workspace costs a :class:`Glance`: a few
attribute reads and one small object, because at a thousand workspaces the allocations, through
the garbage collector's passes over the proxy's large heap, cost more than the reads (measured: a
page of 100 rows took half the time with the collector off). That is also why the totals count
states and interruptions but sum no money: the money is each row's, computed for the rows shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.failover import State

from .board import Board

__all__ = ["Glance", "ListedSite", "OverviewQuery", "glance_at", "overview", "overview_row"]

# The savings fields a row carries: the panel's headline numbers, not its explanations.
ROW_SAVINGS = ("configured", "interruptions_survived", "downtime_avoided_minutes", "value_saved",
               "net", "standby_cost_so_far", "gpu_cost_saved_parked")  # fmt: skip
TROUBLED_SYNC = ("degraded", "stopped")
TROUBLED_PARK = ("park_failed", "resume_failed")


class HostList(Protocol):
    @property
    def hosts(self) -> tuple[str, ...]: ...


class ListedSite(Protocol):
    """One workspace as the overview reads it (proxy.sites.Site): its name, its hosts, its board
    (which holds the workspace, so its machine, and the sync, park and savings)."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> HostList: ...

    @property
    def board(self) -> Board: ...


class OverviewQuery:
    """What part of the overview a caller wants: a fragment of a name or host, attention only,
    and a page. Built from a request's query string; bad numbers fall back to the defaults."""

    def __init__(
        self, text: str = "", attention: bool = False, offset: int = 0, limit: int | None = None
    ) -> None:
        self.text = text.strip().lower()
        self.attention = attention
        self.offset = max(0, offset)
        self.limit = None if limit is None else max(1, limit)

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> OverviewQuery:
        return cls(
            query.get("q", ""),
            query.get("attention", "") in ("1", "true", "yes"),
            _integer(query.get("offset"), 0) or 0,
            _integer(query.get("limit"), None),
        )

    def matches(self, glance: Glance) -> bool:
        if self.attention and not glance.attention:
            return False
        if not self.text:
            return True
        return self.text in glance.name or any(self.text in host for host in glance.hosts)


def _integer(raw: str | None, default: int | None) -> int | None:
    try:
        return default if raw is None else int(raw)
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class Glance:
    """What every workspace costs on each poll, matching or not."""

    site: ListedSite
    name: str
    hosts: tuple[str, ...]
    state: str
    attention: tuple[str, ...]
    survived: int


def glance_at(site: ListedSite) -> Glance:
    board = site.board
    machine = board.workspace.machine
    park = board.park
    health = machine.health
    return Glance(
        site,
        site.name,
        site.spec.hosts,
        machine.state.value,
        _attention(
            machine.state.value,
            health["primary"].up,
            health["standby"].up,
            board.sync.state,
            park.phase,
            park.standby,
        ),
        board.ledger.interruptions,
    )


def _attention(
    state: str, primary: bool | None, standby: bool | None, sync: str, phase: str, vm: str
) -> tuple[str, ...]:
    parked = phase in ("parked", "resuming")
    found = []
    if state == "unavailable":
        found.append("nothing serves")
    elif state == "switching":
        found.append("switching")
    elif state == "serving_standby" and not parked:
        found.append("on the standby")
    if primary is False and not parked:
        found.append("primary down")
    if standby is False:
        found.append("standby down")
    if sync in TROUBLED_SYNC:
        found.append(f"sync {sync}")
    if phase in TROUBLED_PARK:
        found.append(phase.replace("_", " "))
    if vm != "present":
        found.append(f"standby VM {vm}")
    return tuple(found)


def overview_row(glance: Glance, now: float) -> dict[str, Any]:
    """One workspace's row; ``now`` is the workspaces' clock (the event loop's), for ages."""
    board = glance.site.board
    workspace = board.workspace
    machine = workspace.machine
    last = machine.history[-1] if machine.history else None
    park = board.park.as_json()
    found = board.savings(park)
    return {
        "name": glance.name,
        "hosts": list(glance.hosts),
        "state": glance.state,
        "active": machine.active,
        "healthy": {role: health.up for role, health in machine.health.items()},
        "backends": {
            role: {"name": backend.name, "url": str(backend.url)}
            for role, backend in workspace.backends.items()
        },
        "last_switch": None
        if last is None
        else {
            "kind": last.kind,
            "from": last.from_role,
            "to": last.to_role,
            "outcome": last.outcome,
            "reason": last.reason,
            "age_s": round(max(0.0, now - last.started_at), 3),
        },
        "sync": board.sync.as_json(),
        "park": {"phase": park["phase"], "standby": park["standby"]},
        "savings": {key: found[key] for key in ROW_SAVINGS},
        "attention": list(glance.attention),
        "url": f"/dashboard/workspaces/{glance.name}",
    }


def _totals(glances: list[Glance]) -> dict[str, Any]:
    states: dict[str, int] = {state.value: 0 for state in State}  # a zero is news too
    attention = survived = 0
    for glance in glances:
        states[glance.state] += 1
        attention += bool(glance.attention)
        survived += glance.survived
    return {
        "workspaces": len(glances),
        "states": states,
        "attention": attention,
        "interruptions_survived": survived,
    }


def overview(
    sites: Iterable[ListedSite], now: float, query: OverviewQuery | None = None
) -> dict[str, Any]:
    """Every workspace's row, sorted by name, filtered and paged by ``query``; counts over all."""
    query = query or OverviewQuery()
    glances = sorted((glance_at(site) for site in sites), key=lambda glance: glance.name)
    matching = [glance for glance in glances if query.matches(glance)]
    end = None if query.limit is None else query.offset + query.limit
    return {
        "totals": _totals(glances),
        "matching": len(matching),
        "offset": query.offset,
        "limit": query.limit,
        "workspaces": [overview_row(glance, now) for glance in matching[query.offset : end]],
    }


# A replica's view names at most this many (workspace, backend) pairs it sees down; more counted.
VIEW_NAMED = 5


def cluster_card(status: Mapping[str, Any]) -> dict[str, Any]:
    """The overview's replicas card (issue 16) from proxy.cluster's status: this replica and the
    leader, and one row per replica with what its view sees down."""
    me, leader = status["replica"], status.get("leader")
    replicas = sorted({me, *status.get("peers", {}), *status.get("views", {})})
    rows = []
    for replica in replicas:
        view = status.get("views", {}).get(replica, {})
        down = [
            f"{name}/{role}"
            for name, roles in sorted(view.items())
            for role, up in roles.items()
            if up is False
        ]
        rows.append(
            {
                "replica": replica,
                "role": "leader" if replica == leader else "follower",
                "this": replica == me,
                "control": status.get("peers", {}).get(replica, ""),
                "published": replica in status.get("views", {}),
                "down": down[:VIEW_NAMED],
                "down_count": len(down),
            }
        )
    if status.get("store_lost"):
        contact = "no replica reaches the store: routing by the last decisions"
    elif not status.get("in_contact"):
        contact = "out of contact with the store"
    else:
        contact = "in contact with the store"
    led = f"leader {leader} (term {status.get('term')})" if leader else "no leader"
    routing = "" if status.get("routing", True) else " · NOT ROUTING"
    return {
        "summary": f"this is {me} ({'leader' if leader == me else 'follower'}) · {led} · "
        f"{contact}{routing}",
        "replica": me,
        "leader": leader,
        "term": status.get("term"),
        "in_contact": status.get("in_contact"),
        "store_lost": status.get("store_lost"),
        "routing": status.get("routing"),
        "replicas": rows,
    }
