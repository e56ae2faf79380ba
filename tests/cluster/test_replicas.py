"""Three proxy replicas in front of one workspace, agreeing through a real three-member etcd
(issue 16): one leader decides, every replica routes by its decisions, and a replica that loses
the store stops routing rather than send anyone to a stale machine.

The replicas run in the test's process (their state can be read directly); each reaches etcd
through relays of its own, so one replica can be cut off from the store while the others are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.cluster.etcd import Etcd
from proxy.cluster.settings import ClusterConfig
from proxy.config import HooksConfig
from proxy.dashboard.routes import DashboardAssets
from proxy.dashboard.status_cli import status_main
from proxy.failover import CheckResult
from proxy.server import ProxyServer
from tests.support.etcd import EtcdCluster, Relay, etcd_cluster
from tests.support.proxies import base_config, control_url, public_url, upstreams
from tests.support.waiting import until

__all__ = ["etcd_cluster", "upstreams"]  # fixtures

TTL = 2
PREFIX = "/t"


@dataclasses.dataclass
class Replica:
    name: str
    server: ProxyServer
    relays: list[Relay]

    @property
    def member(self) -> Any:
        assert self.server.cluster is not None
        return self.server.cluster

    def leading(self) -> bool:
        return self.member.leadership.leading() is not None

    def cut(self) -> None:
        for relay in self.relays:
            relay.cut()

    def heal(self) -> None:
        for relay in self.relays:
            relay.heal()


Start = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def replicas(etcd_cluster: EtcdCluster) -> AsyncIterator[Start]:
    started: list[Replica] = []
    relays: list[Relay] = []

    async def start(primary: URL, standby: URL, count: int = 3, **overrides: Any) -> list[Replica]:
        view_grace = overrides.pop("view_grace", 2.0)
        store_lost_grace = overrides.pop("store_lost_grace", 60.0)
        overrides.setdefault("switch_wait", 1.0)  # a halted replica's 503 comes after it
        for index in range(count):
            own = [await Relay(member.client_port).start() for member in etcd_cluster.members]
            relays.extend(own)
            cluster = ClusterConfig(
                endpoints=tuple(relay.endpoint for relay in own),
                prefix=PREFIX,
                lease_ttl=TTL,
                replica_id=f"r{index}",
                view_grace=view_grace,
                store_lost_grace=store_lost_grace,
            )
            config = base_config(primary, standby, cluster=cluster, **dict(overrides))
            server = ProxyServer(config)
            await server.start()
            replica = Replica(f"r{index}", server, own)
            started.append(replica)
        group = started
        # Settled before the test acts: one leader, every replica knowing the others, and every
        # one routing to the primary (the "gpu" upstream).
        await until(lambda: len(leaders(group)) == 1, timeout=10, what="one leader")
        await until(
            lambda: all(len(r.member.peers) == count - 1 for r in group), timeout=5, what="roster"
        )
        await everyone_routes_to(group, "gpu", timeout=10)
        return started  # each test starts one group

    yield start
    for replica in started:
        replica.heal()
    for replica in started:
        await replica.server.stop()
    for relay in relays:
        await relay.close()


async def backend_of(session: aiohttp.ClientSession, replica: Replica) -> str | int:
    """Which upstream answered through ``replica`` (its name), or the status it answered."""
    async with session.get(public_url(replica.server) / "work", headers={"Accept": "*/*"}) as r:
        if r.status != 200:
            return r.status
        return str((await r.json())["backend"])


async def everyone_routes_to(replicas: list[Replica], name: str, timeout: float) -> None:
    async with aiohttp.ClientSession() as session:

        async def agreed() -> bool:
            answers = await asyncio.gather(*(backend_of(session, r) for r in replicas))
            return all(answer == name for answer in answers)

        await until(agreed, timeout=timeout, what=f"every replica routing to {name}")


def leaders(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.leading()]


async def test_one_leader_decides_and_every_replica_follows_its_decision(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    leader = leaders(group)[0]
    followers = [r for r in group if r is not leader]
    assert all(not r.server.workspace.machine.deciding for r in followers)

    await gpu.close()  # the GPU is gone: every replica sees it, the leader decides
    started = time.monotonic()
    await everyone_routes_to(group, "cpu", timeout=10)
    assert time.monotonic() - started < 5
    decision = leader.member.decisions.latest["default"]
    assert decision.active == "standby"
    assert decision.term == leader.member.term
    for replica in group:  # the same decision everywhere, by its token
        assert replica.member.decisions.latest["default"].token == decision.token


async def test_a_leader_that_leaves_hands_over_and_the_new_one_keeps_the_decision(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    old = leaders(group)[0]
    old_term = old.member.leadership.leading()
    assert old_term is not None
    old.server.workspace.failover("admin: planned")  # pinned to the standby by an operator
    await everyone_routes_to(group, "cpu", timeout=10)

    rest = [r for r in group if r is not old]
    started = time.monotonic()
    await old.server.stop()  # resigns: no TTL to wait
    group.remove(old)
    await until(lambda: len(leaders(rest)) == 1, timeout=5, what="a new leader")
    assert time.monotonic() - started < 2
    new_term = leaders(rest)[0].member.leadership.leading()
    assert new_term is not None
    assert new_term.revision > old_term.revision  # a new term: its key was created anew
    new = leaders(rest)[0]
    # The operator's failover holds under the new leader: no automatic failback.
    await asyncio.sleep(1.0)
    await everyone_routes_to(rest, "cpu", timeout=2)
    assert new.server.workspace.machine.pinned_to_standby


async def test_a_leader_cut_off_from_the_store_stops_before_another_takes_over(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    old = leaders(group)[0]
    rest = [r for r in group if r is not old]
    stopped_at: list[float] = []
    taken_at: list[float] = []

    async def watch() -> None:
        while not (stopped_at and taken_at):
            now = time.monotonic()
            if not stopped_at and not old.leading():
                stopped_at.append(now)
            if not taken_at and leaders(rest):
                taken_at.append(now)
            await asyncio.sleep(0.01)

    old.cut()
    await asyncio.wait_for(watch(), timeout=15)
    assert stopped_at[0] < taken_at[0], "two leaders acted at once"
    # The cut-off replica stops routing (a peer still reaches the store); the others go on.
    async with aiohttp.ClientSession() as session:
        await until(
            lambda: _status_is(session, old, 503), timeout=TTL + 3, what="the cut-off replica"
        )
        assert [await backend_of(session, r) for r in rest] == ["gpu", "gpu"]
        old.heal()
        healed = time.monotonic()
        await until(lambda: _status_is(session, old, 200), timeout=5, what="routing again")
        assert time.monotonic() - healed < 2.5


async def _status_is(session: aiohttp.ClientSession, replica: Replica, status: int) -> bool:
    answer = await backend_of(session, replica)
    return answer == status or (status == 200 and isinstance(answer, str))


async def test_a_store_answering_slowly_is_not_a_store_lost(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    slow = next(r for r in group if not r.leading())
    for relay in slow.relays:
        relay.delay = 0.3  # each chunk held: most of a second more for a request and its answer
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 4 * TTL
        while time.monotonic() < deadline:
            assert await backend_of(session, slow) == "gpu"
            assert slow.member.presence.in_contact()
            await asyncio.sleep(0.2)
    assert not slow.member.store_lost


async def test_one_replicas_bad_view_fails_no_one_over(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""), view_grace=60.0)
    leader = leaders(group)[0]
    loner = next(r for r in group if r is not leader)

    def checks(replica: Replica, ok: bool) -> None:
        """``replica``'s own checks say so (its checker is stopped: a link of its own)."""
        workspace = replica.server.workspace
        workspace.checker.stop()
        for _ in range(4):
            at = asyncio.get_running_loop().time()
            workspace.feed(CheckResult("primary", ok, at, None, "ok" if ok else "bad link"))

    def leader_sees(replica: Replica, up: bool) -> bool:
        view = leader.member.views.views.get(replica.name, {})
        return view.get("default", {}).get("primary") is up

    # One follower's link to the GPU is bad: its own checks alone see it down.
    checks(loner, False)
    await until(lambda: leader_sees(loner, False), timeout=5, what="the loner's view")
    await asyncio.sleep(1.0)
    await everyone_routes_to(group, "gpu", timeout=2)

    # The leader's own link is bad while everyone else's is fine: it waits its view grace.
    checks(loner, True)
    await until(lambda: leader_sees(loner, True), timeout=5, what="the loner's view again")
    checks(leader, False)
    await asyncio.sleep(1.0)
    assert leader.server.workspace.machine.active == "primary"
    await everyone_routes_to(group, "gpu", timeout=2)

    # Another replica agrees: the leader fails everyone over at once.
    checks(loner, False)
    await everyone_routes_to(group, "cpu", timeout=5)


async def test_workspaces_written_on_one_replica_reach_every_replica(
    replicas: Start, upstreams: tuple[TestServer, TestServer], etcd_cluster: EtcdCluster
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    document = {
        "hosts": ["alice.test"],
        "primary": str(cpu.make_url("")),
        "standby": str(gpu.make_url("")),
    }
    async with aiohttp.ClientSession() as session:
        async with session.put(
            control_url(group[1].server) / "admin/workspaces/alice", json=document
        ) as r:
            assert r.status in (200, 201), await r.text()
        started = time.monotonic()
        await until(
            lambda: all("alice" in r.server.sites.by_name for r in group),
            timeout=3,
            what="alice everywhere",
        )
        assert time.monotonic() - started < 1.5

        # A malformed entry written by hand is skipped by name; everyone else keeps serving.
        etcd = Etcd(etcd_cluster.endpoints)
        try:
            await etcd.put(f"{PREFIX}/workspaces/broken", b'{"hosts": ["x.test"], "primary": 5')
            await etcd.put(
                f"{PREFIX}/workspaces/bob", json.dumps({**document, "hosts": ["bob.test"]}).encode()
            )
            await until(
                lambda: all("bob" in r.server.sites.by_name for r in group), timeout=3, what="bob"
            )
            assert all("broken" not in r.server.sites.by_name for r in group)
        finally:
            await etcd.close()

        # A write that would produce a bad entry is a 400, and the store is untouched.
        async with session.put(
            control_url(group[2].server) / "admin/workspaces/carol", json={"hosts": ["c.test"]}
        ) as r:
            assert r.status == 400
        async with session.delete(control_url(group[0].server) / "admin/workspaces/alice") as r:
            assert r.status in (200, 204)
        await until(
            lambda: all("alice" not in r.server.sites.by_name for r in group),
            timeout=3,
            what="alice gone",
        )
        assert all("carol" not in r.server.sites.by_name for r in group)


async def test_hooks_run_on_the_leader_alone_with_the_decisions_fencing_token(
    replicas: Start, upstreams: tuple[TestServer, TestServer], tmp_path: Path
) -> None:
    gpu, cpu = upstreams
    record = tmp_path / "tokens"
    hooks = HooksConfig(on_failover=f'echo "$DUMONT_FENCING_TOKEN" >> {record}')
    group = await replicas(gpu.make_url(""), cpu.make_url(""), hooks=hooks)
    leader = leaders(group)[0]
    await gpu.close()
    await everyone_routes_to(group, "cpu", timeout=10)
    await until(
        lambda: record.exists() and record.read_text().strip() != "", timeout=5, what="hook"
    )
    await asyncio.sleep(0.5)
    tokens = record.read_text().split()
    assert tokens == [str(leader.member.decisions.latest["default"].token)]


async def test_a_command_sent_to_a_follower_is_carried_out_by_the_leader(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""))
    follower = next(r for r in group if not r.leading())
    async with aiohttp.ClientSession() as session:
        async with session.post(control_url(follower.server) / "admin/failover") as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Dumont-Leader"] == leaders(group)[0].name
        async with session.get(control_url(follower.server) / "admin/cluster") as r:
            status = await r.json()
    await everyone_routes_to(group, "cpu", timeout=5)
    assert status["leader"] == leaders(group)[0].name
    assert status["replica"] == follower.name

    # `dumont-proxy status` says which replica leads (blocking urllib: in a thread, since the
    # replicas answer on this very loop).
    control = str(control_url(follower.server)).rstrip("/")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await asyncio.to_thread(status_main, ["--control", control], {})
    first = out.getvalue().splitlines()[0]
    assert first.startswith(f"cluster: this is {follower.name} (follower) · leader ")
    assert leaders(group)[0].name in first


async def test_with_the_store_lost_by_everyone_the_last_decisions_hold_for_a_grace(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""), store_lost_grace=4.0)
    for replica in group:
        replica.cut()
    await until(lambda: all(r.member.store_lost for r in group), timeout=TTL + 3, what="store lost")
    await everyone_routes_to(group, "gpu", timeout=1)  # still routing by the last decision
    metrics = await _get_text(control_url(group[0].server) / "metrics")
    assert "dumont_cluster_store_lost 1.0" in metrics
    # Every replica series the alerts use is one a replica exports.
    alerts = (Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\bdumont_cluster_[a-z_]+", alerts))
    assert used
    assert all(f"\n{name} " in metrics for name in used), used
    async with aiohttp.ClientSession() as session:
        await until(
            lambda: _all_status(session, group, 503), timeout=6, what="stopped after the grace"
        )
    for replica in group:
        replica.heal()
    await everyone_routes_to(group, "gpu", timeout=5)


async def _all_status(session: aiohttp.ClientSession, group: list[Replica], status: int) -> bool:
    seen = [await backend_of(session, r) for r in group]
    return all(answer == status for answer in seen)


async def _get_text(url: URL) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.text()


async def test_the_dashboard_shows_the_replicas_the_leader_and_each_view(
    replicas: Start, upstreams: tuple[TestServer, TestServer]
) -> None:
    gpu, cpu = upstreams
    group = await replicas(gpu.make_url(""), cpu.make_url(""), view_grace=60.0)
    leader = leaders(group)[0]
    loner = next(r for r in group if not r.leading())
    loner.server.workspace.checker.stop()
    for _ in range(3):  # the loner alone sees the GPU down
        at = asyncio.get_running_loop().time()
        loner.server.workspace.feed(CheckResult("primary", False, at, None, "bad link"))

    async def page() -> dict[str, Any]:
        url = control_url(group[0].server) / "dashboard/overview"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            found: dict[str, Any] = await r.json()
            return found

    async def card() -> dict[str, Any]:
        found: dict[str, Any] = (await page())["cluster"]
        return found

    async def loner_seen() -> bool:
        rows = {row["replica"]: row for row in (await card())["replicas"]}
        return bool(rows[loner.name]["down"] == ["default/primary"])

    await until(loner_seen, timeout=5, what="the loner's view on the card")
    shown = await card()
    rows = {row["replica"]: row for row in shown["replicas"]}
    assert set(rows) == {r.name for r in group}
    assert rows[leader.name]["role"] == "leader"
    assert rows[group[0].name]["this"]
    assert [row["down_count"] for name, row in rows.items() if name != loner.name] == [0, 0]
    role = "leader" if leader is group[0] else "follower"
    assert shown["summary"].startswith(f"this is {group[0].name} ({role}) · leader {leader.name}")

    # The overview page draws the same card before its script runs.
    assets = DashboardAssets.load(Path(__file__).parents[2])
    html = assets.overview.render(overview=await page(), version="v", root="")
    assert 'id="replicas-body"' in html
    assert "default/primary" in html
    assert f'<tr data-replica="{leader.name}">' in html
