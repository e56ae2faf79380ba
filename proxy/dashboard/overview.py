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
and totals over every workspace, matching or not, so the masthead never depends on the page shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from proxy.failover import State

from .board import Board

__all__ = ["ListedSite", "OverviewQuery", "overview", "overview_row"]

# Sums shown over every workspace; each is None until one workspace has a number for it.
SUMMED = ("value_saved", "net", "standby_cost_so_far", "gpu_cost_saved_parked")
# The savings fields a row carries: the panel's headline numbers, not its explanations.
ROW_SAVINGS = ("configured", "interruptions_survived", "downtime_avoided_minutes", *SUMMED)
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

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.attention and not row["attention"]:
            return False
        if not self.text:
            return True
        return self.text in row["name"] or any(self.text in host for host in row["hosts"])


def _integer(raw: str | None, default: int | None) -> int | None:
    try:
        return default if raw is None else int(raw)
    except ValueError:
        return default


def _glance(site: ListedSite) -> dict[str, Any]:
    """What every workspace costs on each poll, matching or not: attribute reads, no formatting."""
    board = site.board
    machine = board.workspace.machine
    park = board.park
    glance: dict[str, Any] = {
        "name": site.name,
        "hosts": list(site.spec.hosts),
        "state": machine.state.value,
        "active": machine.active,
        "healthy": {role: health.up for role, health in machine.health.items()},
    }
    parked = park.phase in ("parked", "resuming")
    glance["attention"] = _attention(glance, board.sync.state, park.phase, park.standby, parked)
    return glance


def _attention(
    glance: Mapping[str, Any], sync: str, phase: str, standby: str, parked: bool
) -> list[str]:
    found = []
    state, healthy = glance["state"], glance["healthy"]
    if state == "unavailable":
        found.append("nothing serves")
    elif state == "switching":
        found.append("switching")
    elif state == "serving_standby" and not parked:
        found.append("on the standby")
    if healthy.get("primary") is False and not parked:
        found.append("primary down")
    if healthy.get("standby") is False:
        found.append("standby down")
    if sync in TROUBLED_SYNC:
        found.append(f"sync {sync}")
    if phase in TROUBLED_PARK:
        found.append(phase.replace("_", " "))
    if standby != "present":
        found.append(f"standby VM {standby}")
    return found


def overview_row(
    site: ListedSite, now: float, glance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One workspace's row; ``now`` is the workspaces' clock (the event loop's), for ages."""
    row = _glance(site) if glance is None else glance
    board = site.board
    workspace = board.workspace
    history = workspace.machine.history
    last = history[-1] if history else None
    park = board.park.as_json()
    found = board.savings(park)
    row["backends"] = {
        role: {"name": backend.name, "url": str(backend.url)}
        for role, backend in workspace.backends.items()
    }
    row["last_switch"] = (
        None
        if last is None
        else {
            "kind": last.kind,
            "from": last.from_role,
            "to": last.to_role,
            "outcome": last.outcome,
            "reason": last.reason,
            "age_s": round(max(0.0, now - last.started_at), 3),
        }
    )
    row["sync"] = board.sync.as_json()
    row["park"] = {"phase": park["phase"], "standby": park["standby"]}
    row["savings"] = {key: found[key] for key in ROW_SAVINGS}
    row["url"] = f"/dashboard/workspaces/{row['name']}"
    return row


def _totals(sites: list[tuple[ListedSite, dict[str, Any]]]) -> dict[str, Any]:
    states: dict[str, int] = {state.value: 0 for state in State}  # a zero is news too
    sums: dict[str, float | None] = dict.fromkeys(SUMMED)
    survived = 0
    for site, glance in sites:
        states[glance["state"]] += 1
        found = site.board.savings()
        survived += found["interruptions_survived"]
        for key in SUMMED:
            value = found[key]
            if value is not None:
                sums[key] = (sums[key] or 0.0) + value
    return {
        "workspaces": len(sites),
        "states": states,
        "attention": sum(1 for _, glance in sites if glance["attention"]),
        "interruptions_survived": survived,
        **{key: None if value is None else round(value, 2) for key, value in sums.items()},
    }


def overview(
    sites: Iterable[ListedSite], now: float, query: OverviewQuery | None = None
) -> dict[str, Any]:
    """Every workspace's row, sorted by name, filtered and paged by ``query``; totals over all.
    Only the page's rows are built whole: the rest cost a glance each."""
    query = query or OverviewQuery()
    glanced = sorted(((site, _glance(site)) for site in sites), key=lambda pair: pair[1]["name"])
    matching = [pair for pair in glanced if query.matches(pair[1])]
    end = None if query.limit is None else query.offset + query.limit
    return {
        "totals": _totals(glanced),
        "matching": len(matching),
        "offset": query.offset,
        "limit": query.limit,
        "workspaces": [
            overview_row(site, now, glance) for site, glance in matching[query.offset : end]
        ],
    }
