"""``dumont-proxy status``: the dashboard's state as a terminal table (from /admin/status), and
the overview of every workspace as one line each (from /admin/overview, issue 15)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_status", "render_workspaces"]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _health(up: bool | None) -> str:
    return {True: "up", False: "DOWN", None: "unknown"}[up]


def render_status(state: Mapping[str, Any], history: int = 10) -> str:
    active = state.get("active")
    backends: Mapping[str, Mapping[str, Any]] = state["backends"]
    serving = f"{backends[active]['name']} ({active})" if active else "NOTHING"
    out = [f"serving: {serving}    state: {state['state']}", ""]
    rows = []
    for role, b in backends.items():
        latency = b.get("last_check_latency_ms")
        rows.append(
            [
                b["name"],
                role,
                _health(b.get("healthy")),
                "-" if latency is None else f"{latency:.2f} ms",
                str(b.get("open_websockets", 0)),
                b.get("last_detail") or "",
                b["url"],
            ]
        )
    out += _table(["backend", "role", "health", "latency", "ws", "detail", "url"], rows)
    sync = state.get("sync") or {}
    if sync:
        lag = sync.get("lag_seconds")
        age = sync.get("report_age_s")
        out += [
            "",
            f"sync: {sync.get('state', 'unknown')}    lag: "
            f"{'not measured' if lag is None else _seconds(lag)}    last report: "
            f"{'never' if age is None else _seconds(age) + ' ago'}",
        ]
    switches = list(state.get("switches") or [])[:history]
    out.append("")
    if switches:
        out += _table(
            ["#", "ago", "kind", "from -> to", "reason", "outcome", "duration"],
            [
                [
                    str(s["id"]),
                    _seconds(s.get("age_s")),
                    s["kind"],
                    f"{s.get('from') or 'nothing'} -> {s['to']}",
                    s["reason"] + (f" ({s['detail']})" if s.get("detail") else ""),
                    s["outcome"],
                    _seconds(s.get("duration_s")),
                ]
                for s in switches
            ],
        )
    else:
        out.append("no switch yet")
    tips = state.get("tips")
    if tips:
        out.append("")
        out += _table(
            ["tip variant", "shown", "clicks", "rate"],
            [
                [
                    v,
                    str(t["impressions"]),
                    str(t["clicks"]),
                    "-" if t["click_rate"] is None else f"{t['click_rate'] * 100:.1f} %",
                ]
                for v, t in tips.items()
            ],
        )
    savings = state.get("savings")
    if savings:
        out += [
            "",
            f"interruptions survived: {savings['interruptions_survived']}    downtime avoided: "
            f"{savings['downtime_avoided_minutes']:.1f} min    value: "
            f"{_money(savings['value_saved'])}    standby per month: "
            f"{_money(savings['standby_cost_per_month'])}    net so far: {_money(savings['net'])}",
        ]
    park = state.get("park")
    if park:
        # Issue 18: where the GPU is, what parking saved, and a missing standby, loudly.
        standby = park["standby"] if park["standby"] == "present" else park["standby"].upper()
        detail = f"    {park['detail']}" if park.get("detail") else ""
        out += [
            "",
            f"gpu: {park['phase']}    parked: {_seconds(park['parked_hours'] * 3600)}    saved: "
            f"{_money(park['gpu_cost_saved'])}    standby VM: {standby}{detail}",
        ]
    return "\n".join(out)


def _last_switch(switch: Mapping[str, Any] | None) -> str:
    if not switch:
        return "-"
    return f"{switch['kind']} -> {switch['to']} {switch['outcome']} {_seconds(switch['age_s'])} ago"


def _sync(sync: Mapping[str, Any]) -> str:
    lag = sync.get("lag_seconds")
    state = str(sync["state"])
    return state if lag is None else f"{state} {_seconds(lag)}"


def render_workspaces(overview: Mapping[str, Any]) -> str:
    """One line per workspace: what the dashboard's overview shows, for a terminal."""
    totals = overview["totals"]
    states: Mapping[str, int] = totals["states"]
    out = [
        f"workspaces: {totals['workspaces']}    on primary: {states.get('serving_primary', 0)}"
        f"    on standby: {states.get('serving_standby', 0)}"
        f"    switching: {states.get('switching', 0)}"
        f"    nothing serves: {states.get('unavailable', 0)}"
        f"    needs attention: {totals['attention']}",
        "",
    ]
    rows = overview["workspaces"]
    if not rows:
        return "\n".join([*out, "no workspace"])
    headers = ["workspace", "hosts", "state", "active", "primary", "standby", "last switch"]
    out += _table(
        [*headers, "sync", "attention"],
        [
            [
                w["name"],
                ",".join(w["hosts"]),
                w["state"],
                w["active"] or "NOTHING",
                _health(w["healthy"].get("primary")),
                _health(w["healthy"].get("standby")),
                _last_switch(w["last_switch"]),
                _sync(w["sync"]),
                ", ".join(w["attention"]) or "-",
            ]
            for w in rows
        ],
    )
    return "\n".join(out)


def render_cluster(cluster: Mapping[str, Any]) -> str:
    """One line about the replicas (issue 16): who this is, who leads, and whether it routes."""
    me = cluster["replica"]
    leader = cluster.get("leader")
    role = "leader" if cluster.get("leading") else "follower"
    led = f"leader {leader} (term {cluster.get('term')})" if leader else "no leader"
    contact = "in contact with the store" if cluster.get("in_contact") else "out of contact"
    if cluster.get("store_lost"):
        contact = "store lost by every replica: routing by the last decisions"
    routing = "" if cluster.get("routing", True) else "; NOT ROUTING"
    replicas = 1 + len(cluster.get("peers") or {})
    return f"cluster: replica {me} ({role}); {led}; {replicas} replicas; {contact}{routing}"
