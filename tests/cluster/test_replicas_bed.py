"""Three proxy replica processes, a three-member etcd and two backend processes (issue 16), with
replica r2 in a network namespace of its own (tests/support/replicas.py): what a user behind
each replica sees when a leader, a backend or an etcd member dies (SIGKILL) or freezes
(SIGSTOP), and when r2 is cut off from the store or from the primary alone.

A poller asks every replica for /work at once, every 50 ms; "split" is a stretch during which two
replicas' latest answers came from different backends, timed by when the answers arrived
(tests/support/replicas.py's split_windows). The issue's bound on that: lease TTL + 1 s. The bounds
on times are generous (this machine has two cores and other runs on it); each is the documented
one plus what a loaded box adds, and says which.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.hosts import namespaces_available
from tests.support.replicas import TTL, Poller, ReplicaBed, polling, split_windows
from tests.support.waiting import until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

Status = dict[str, Any]  # GET /admin/cluster
SPLIT_BOUND = TTL + 1.0  # the issue's: no two replicas on different machines for longer


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[ReplicaBed]:
    why = namespaces_available()
    if why is not None:
        pytest.fail(f"the replica bed needs network namespaces (ip netns add): {why}")
    with ReplicaBed(tmp_path) as built:
        yield built


async def statuses(bed: ReplicaBed, session: aiohttp.ClientSession) -> dict[str, Status | None]:
    names = [n for n, r in bed.replicas.items() if r.alive()]
    found = await asyncio.gather(*(bed.status(session, n) for n in names))
    return dict(zip(names, found, strict=True))


def longest_split(poller: Poller) -> float:
    return max((end - began for began, end in split_windows(poller.rounds)), default=0.0)


async def test_a_killed_leader_is_replaced_within_a_ttl_and_nobody_routes_apart(
    bed: ReplicaBed,
) -> None:
    old = bed.leader()
    assert old is not None
    rest = [n for n in bed.replicas if n != old]
    async with polling(bed, rest) as poller, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        bed.kill_replica(old)
        new: list[str] = []

        async def taken() -> bool:
            found = await statuses(bed, session)
            new[:] = [n for n, s in found.items() if s and s["leading"]]
            return len(new) == 1

        await until(taken, "a new leader", timeout=15, interval=0.02)
        took = time.monotonic() - killed
        await asyncio.sleep(1.0)
    # etcd expires the dead leader's lease TTL after its last renewal; a follower campaigns on
    # the key's deletion. Documented: TTL + 1.5 s.
    assert took < TTL + 1.5, f"takeover took {took:.2f} s"
    assert new[0] != old
    after = [r for r in poller.rounds if r.at > killed]
    assert after, "no poll after the kill"
    failed = [r.answers for r in after if any(a != "gpu" for a in r.answers.values())]
    assert not failed, failed[:5]
    assert longest_split(poller) <= SPLIT_BOUND


async def test_a_killed_primary_moves_every_replica_and_one_hook_runs_on_the_leader(
    bed: ReplicaBed,
) -> None:
    leader = bed.leader()
    async with polling(bed) as poller, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        bed.kill_backend("gpu")
        await until(lambda: _all_answer(poller, "cpu"), "every replica on the cpu", timeout=15)
        moved = time.monotonic() - killed
        await until(bed.hook_log.exists, "the on_failover hook", timeout=10)
        await asyncio.sleep(2.0)  # a second hook, anywhere, would have run by now
        found = await statuses(bed, session)
    lines = bed.hook_log.read_text().splitlines()
    assert len(lines) == 1, lines
    replica, token = lines[0].split()
    assert replica == leader
    status = found[leader]
    assert status is not None
    decision = status["decisions"]["default"]
    assert decision["active"] == "standby"
    # The hook ran with the decision's fencing token: the etcd revision it was written at.
    assert int(token) == decision["token"]
    assert all(s is not None and s["decisions"]["default"]["token"] == decision["token"]
               for s in found.values())  # fmt: skip
    # fall 2 at 0.5 s, plus the write and the watch: a few seconds on a loaded box.
    assert moved < 8, f"every replica on the cpu after {moved:.2f} s"
    assert longest_split(poller) <= SPLIT_BOUND, split_windows(poller.rounds)


async def test_a_silently_dead_primary_moves_every_replica_within_the_window(
    bed: ReplicaBed,
) -> None:
    async with polling(bed) as poller:
        await asyncio.sleep(0.5)
        stopped = time.monotonic()
        bed.pause_backend("gpu")  # SIGSTOP: connections are accepted and never answered
        await until(lambda: _all_answer(poller, "cpu"), "every replica on the cpu", timeout=20)
        moved = time.monotonic() - stopped
        await asyncio.sleep(1.0)
    windows = split_windows(poller.rounds)
    assert longest_split(poller) <= SPLIT_BOUND, windows
    # Checks time out after the interval (0.5 s), fall 2, then the leader's rule and the write.
    assert moved < 10, f"every replica on the cpu after {moved:.2f} s"
    lines = bed.hook_log.read_text().splitlines()
    assert len(lines) == 1, lines


async def test_the_leader_and_the_primary_dying_together_fail_over_once_under_a_new_term(
    bed: ReplicaBed,
) -> None:
    old = bed.leader()
    assert old is not None
    before = bed.status_sync(old)
    assert before is not None
    rest = [n for n in bed.replicas if n != old]
    async with polling(bed, rest) as poller, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        bed.kill_replica(old)
        bed.kill_backend("gpu")
        # No leader for up to a TTL: nobody may switch; then the new one decides.
        await until(lambda: _all_answer(poller, "cpu"), "every replica on the cpu", timeout=20)
        moved = time.monotonic() - killed
        await until(bed.hook_log.exists, "the on_failover hook", timeout=10)
        await asyncio.sleep(2.0)
        found = await statuses(bed, session)
    new = [n for n, s in found.items() if s and s["leading"]]
    assert len(new) == 1
    assert new[0] != old
    lines = bed.hook_log.read_text().splitlines()
    assert len(lines) == 1, lines
    replica, token = lines[0].split()
    assert replica == new[0]
    status = found[new[0]]
    assert status is not None
    decision = status["decisions"]["default"]
    assert decision["active"] == "standby"
    assert int(token) == decision["token"]
    assert decision["token"] > before["decisions"]["default"]["token"]
    assert decision["term"] > before["decisions"]["default"]["term"]
    assert moved < TTL + 1.5 + 3, f"every replica on the cpu after {moved:.2f} s"
    assert longest_split(poller) <= SPLIT_BOUND, split_windows(poller.rounds)


async def test_a_leader_frozen_past_its_lease_never_routes_by_its_stale_decision(
    bed: ReplicaBed,
) -> None:
    old = bed.leader()
    assert old is not None
    rest = [n for n in bed.replicas if n != old]
    async with polling(bed, pause=0.02) as poller, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.3)
        bed.signal_replica(old, signal.SIGSTOP)
        # The others elect a leader of their own and fail over by command meanwhile.
        await until(
            lambda: bed.leader() not in (None, old), "a new leader", timeout=15, interval=0.2
        )
        new = bed.leader()
        assert new is not None
        assert await bed.command(session, new, "/admin/failover") == 200
        moved = time.monotonic()
        await until(
            lambda: all(poller.arrived(n, "cpu", moved) for n in rest), "the others on the cpu"
        )
        thawed = time.monotonic()
        bed.signal_replica(old, signal.SIGCONT)
        await until(lambda: poller.arrived(old, "cpu", thawed), f"{old} on the cpu", timeout=15)
        await asyncio.sleep(0.5)
    stale = [
        round(r.done[old] - thawed, 3)
        for r in poller.rounds
        if r.done[old] >= thawed and r.answers[old] == "gpu"
    ]
    assert not stale, f"{old} routed to the GPU the cluster had left, {stale} s after thawing"


def _all_answer(poller: Poller, backend: str) -> bool:
    return (
        bool(poller.rounds)
        and poller.rounds[-1].backends() == {backend}
        and all(a == backend for a in poller.rounds[-1].answers.values())
    )


async def test_a_replica_cut_from_the_store_stops_routing_and_routes_again_once_healed(
    bed: ReplicaBed,
) -> None:
    async with polling(bed) as poller:
        await asyncio.sleep(0.5)
        cut = time.monotonic()
        bed.cut_from_store()
        await until(lambda: poller.first("r2", 503, cut) is not None, "r2's 503", timeout=15)
        halted = poller.first("r2", 503, cut)
        assert halted is not None
        await asyncio.sleep(1.0)
        healed = time.monotonic()
        bed.heal()
        await until(lambda: poller.arrived("r2", "gpu", healed), "r2 routing again", timeout=15)
        back = poller.arrived("r2", "gpu", healed)
        assert back is not None
        await asyncio.sleep(0.5)
    # Out of contact for a TTL, it asks its peers, who reach the store: it halts. The 503 comes
    # after switch_wait (1 s); the round's start is when it was already halted.
    assert halted.at - cut < TTL + 2, f"r2 halted {halted.at - cut:.2f} s after the cut"
    assert halted.retry_after["r2"] is not None, "a 503 without Retry-After"
    # Presence retries every 0.2 s: about a second on a quiet box (the issue's), 3 s here.
    assert back - healed < 3.0, f"r2 routed again {back - healed:.2f} s after healing"
    others = [r for r in poller.rounds if r.at > cut]
    assert all(r.answers["r0"] == "gpu" and r.answers["r1"] == "gpu" for r in others)
    assert all(r.answers["r2"] in ("gpu", 503) for r in others), {r.answers["r2"] for r in others}


async def test_a_healed_replica_routes_by_the_decisions_made_while_it_was_cut_off(
    bed: ReplicaBed,
) -> None:
    async with polling(bed, pause=0.02) as poller, aiohttp.ClientSession() as session:
        cut = time.monotonic()
        bed.cut_from_store()
        await until(lambda: poller.first("r2", 503, cut) is not None, "r2's 503", timeout=15)
        # The cluster moves on without r2; its own checks still see the GPU fine.
        assert await bed.command(session, "r0", "/admin/failover") == 200
        moved = time.monotonic()
        await until(
            lambda: poller.arrived("r0", "cpu", moved) and poller.arrived("r1", "cpu", moved),
            "r0 and r1 on the cpu",
            timeout=10,
        )
        await asyncio.sleep(0.5)
        healed = time.monotonic()
        bed.heal()
        await until(lambda: poller.arrived("r2", "cpu", healed), "r2 on the cpu", timeout=15)
        await asyncio.sleep(0.5)
    stale = [
        round(r.done["r2"] - healed, 3)
        for r in poller.rounds
        if r.done["r2"] >= healed and r.answers["r2"] == "gpu"
    ]
    assert not stale, f"r2 routed to the GPU the cluster had left, {stale} s after healing"


async def test_one_replica_cut_from_the_primary_fails_nobody_over(bed: ReplicaBed) -> None:
    leader = bed.leader()
    assert leader is not None
    assert leader != "r2"  # the bed starts r2 last: a follower
    async with polling(bed, ["r0", "r1"]) as poller, aiohttp.ClientSession() as session:
        bed.cut_from("gpu")

        async def leader_sees_r2_down() -> bool:
            status = await bed.status(session, leader)
            view = (status or {}).get("views", {}).get("r2", {}).get("default", {})
            return view.get("primary") is False

        await until(leader_sees_r2_down, "the leader seeing r2's view", timeout=15)
        # view_grace is for the leader's own view; r2's alone moves nobody, however long.
        await asyncio.sleep(4.0)
        found = await statuses(bed, session)
        bed.heal()
    for name, status in found.items():
        assert status is not None, name
        assert status["decisions"]["default"]["active"] == "primary", (name, status)
    assert all(r.answers == {"r0": "gpu", "r1": "gpu"} for r in poller.rounds)
    assert not bed.hook_log.exists()


async def test_a_killed_etcd_member_stops_no_one_and_moves_leadership_at_most_once(
    bed: ReplicaBed,
) -> None:
    assert bed.etcd is not None
    victim = _etcd_leader(bed)
    leaders: list[str | None] = []
    async with polling(bed) as poller, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        bed.etcd.kill(victim)
        while time.monotonic() - killed < 3 * TTL + 2:
            found = await statuses(bed, session)
            leading = [n for n, s in found.items() if s and s["leading"]]
            assert len(leading) <= 1, f"two leaders: {leading}"
            if leading and (not leaders or leaders[-1] != leading[0]):
                leaders.append(leading[0])
            await asyncio.sleep(0.1)
    after = [r for r in poller.rounds if r.at > killed]
    assert after
    bad = [r.answers for r in after if any(a != "gpu" for a in r.answers.values())]
    assert not bad, bad[:5]
    assert 1 <= len(leaders) <= 2, leaders


def _etcd_leader(bed: ReplicaBed) -> int:
    """The index of the member etcd's Raft elected: killing it is the harder case."""
    import urllib.request

    assert bed.etcd is not None
    ids = []
    leader = None
    for member in bed.etcd.members:
        request = urllib.request.Request(
            member.endpoint + "/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=3) as answer:
            status = json.load(answer)
        ids.append(status["header"]["member_id"])
        leader = status["leader"]
    return ids.index(leader) if leader in ids else 0
