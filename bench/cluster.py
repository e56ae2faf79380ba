#!/usr/bin/env python3
"""Proxy replicas through etcd (issue 16): how fast the cluster moves, on the bed of
tests/support/replicas.py (three replica processes, etcd with three members, backends "gpu" and
"cpu", replica r2 in a network namespace of its own; lease TTL 2 s, health checks every 0.5 s,
fall 2, rise 2).

- **takeover**: SIGKILL of the leader's process group to another replica saying it leads
  (GET /admin/cluster on each, every 20 ms); the killed replica is started again between runs.
- **propagation**: POST /admin/failover, then /admin/failback, to the leader, alternately; from
  the leader's log line saying the decision landed in etcd (it is written after the write is
  acknowledged, millisecond wall-clock stamps) to the first poll round in which every replica
  answers from the decided backend (rounds of GET /work through all three at once, every 10 ms).
  Also from sending the command to that round.
- **split window**: SIGKILL (loud: connections refused) or SIGSTOP (silent: accepted, never
  answered) of the primary backend's group; from the arrival of the first answer from the standby
  through any replica to the arrival of the first one through the last replica to switch. A
  request held by a replica's data plane (it waits for the verdict or the switch, then goes to
  whichever backend serves) arrives when that replica switched, so arrivals, not the rounds'
  starts, time it. The primary is then restarted on its port and failed back by command.
- **resume after a healed partition**: r2 cut from every etcd member (iptables DROP in its
  namespace) until it answers 503, then healed: to its first answer from the backend again.

Patroni's and Kubernetes' rows are their documented defaults, not run here: Patroni ``ttl`` 30 s,
``loop_wait`` 10 s (a replica notices the leader key gone within a loop, after the key's TTL);
Kubernetes' client-go leader election ``LeaseDuration`` 15 s, ``RenewDeadline`` 10 s,
``RetryPeriod`` 2 s (a candidate takes an expired lease on its next retry).

Usage: ``.venv/bin/python bench/cluster.py [--runs N] [--quick] [--json FILE]``; needs root (a
network namespace and iptables in it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, from bench/

from tests.support.replicas import TTL, ReplicaBed, polling

DECIDED = re.compile(r"^(\S+Z) \S+\s+dumont\.cluster: decided default -> (\w+) \(token (\d+)\)")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def wait_for(check: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``check`` until true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def leader_of(bed: ReplicaBed, session: aiohttp.ClientSession) -> str | None:
    names = [n for n, r in bed.replicas.items() if r.alive()]
    found = await asyncio.gather(*(bed.status(session, n) for n in names))
    leading = [n for n, s in zip(names, found, strict=True) if s and s["leading"]]
    return leading[0] if len(leading) == 1 else None


async def settle(bed: ReplicaBed, to: str = "gpu") -> None:
    await wait_for(lambda: bed.all_route(to), 30, f"every replica on {to}", interval=0.1)


# ------------------------------------------------------------------------------ takeover


async def takeover(bed: ReplicaBed, runs: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            old = await leader_of(bed, session)
            assert old is not None, "no single leader before the kill"
            killed = time.monotonic()
            bed.kill_replica(old)

            async def taken(old: str = old) -> bool:
                new = await leader_of(bed, session)
                return new is not None and new != old

            times.append(await wait_for(taken, 30, "a new leader") - killed)
            print(f"takeover {run + 1}/{runs}: {times[-1]:.2f} s ({old})", file=sys.stderr)
            bed.start_replica(old)
            await settle(bed)
    return times


# ---------------------------------------------------------------------------- propagation


def decided_at(bed: ReplicaBed, name: str, role: str, seen: int) -> tuple[float, int] | None:
    """The wall-clock time of the leader's ``seen``-th-or-later "decided default -> role" line."""
    lines = bed.replicas[name].log.read_text(errors="replace").splitlines()
    found = [m for line in lines if (m := DECIDED.match(line)) and m.group(2) == role]
    if len(found) <= seen:
        return None
    stamp = datetime.fromisoformat(found[-1].group(1).replace("Z", "+00:00")).timestamp()
    return stamp, len(found)


async def propagation(bed: ReplicaBed, runs: int) -> tuple[list[float], list[float]]:
    from_write: list[float] = []
    from_command: list[float] = []
    async with polling(bed, pause=0.01) as poller, aiohttp.ClientSession() as session:
        for run in range(runs):
            leader = await leader_of(bed, session)
            assert leader is not None
            path, role, backend = (
                ("/admin/failover", "standby", "cpu")
                if run % 2 == 0
                else ("/admin/failback", "primary", "gpu")
            )
            lines = decided_at(bed, leader, role, 0)
            seen = 0 if lines is None else lines[1]
            sent = time.monotonic()
            sent_wall = time.time()
            status = await bed.command(session, leader, path)
            assert status == 200, f"{path}: HTTP {status}"

            def switched(sent: float = sent, backend: str = backend) -> list[float | None]:
                return [poller.arrived(n, backend, sent) for n in bed.replicas]

            await wait_for(lambda: None not in switched(), 15, f"all on {backend}", 0.01)
            agreed = max(t for t in switched() if t is not None)
            written = decided_at(bed, leader, role, seen)
            assert written is not None, f"{leader} logged no decision for {role}"
            # Monotonic and wall clocks on one machine: the round's wall time is the command's
            # wall time plus the monotonic time since.
            from_write.append(sent_wall + (agreed - sent) - written[0])
            from_command.append(agreed - sent)
            print(
                f"propagation {run + 1}/{runs}: {from_write[-1] * 1000:.0f} ms from the write",
                file=sys.stderr,
            )
            await asyncio.sleep(0.3)
    return from_write, from_command


# ---------------------------------------------------------------------------- split window


async def split_window(
    bed: ReplicaBed, runs: int, silent: bool = False
) -> tuple[list[float], list[float]]:
    """``silent``: SIGSTOP rather than SIGKILL (connections accepted, never answered)."""
    windows: list[float] = []
    switched: list[float] = []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            async with polling(bed, pause=0.01) as poller:
                await asyncio.sleep(0.3)
                killed = time.monotonic()
                if silent:
                    bed.pause_backend("gpu")
                else:
                    bed.kill_backend("gpu")

                def on_cpu(killed: float = killed) -> list[float | None]:
                    return [poller.arrived(n, "cpu", killed) for n in bed.replicas]

                await wait_for(lambda: None not in on_cpu(), 30, "every replica on the cpu")
            moved = [t for t in on_cpu() if t is not None]
            first, last = min(moved), max(moved)
            windows.append(last - first)
            switched.append(last - killed)
            print(f"split {run + 1}/{runs}: {windows[-1] * 1000:.0f} ms", file=sys.stderr)
            bed.kill_backend("gpu")  # a stopped one too: SIGKILL ends it
            bed.start_backend("gpu")
            leader = await leader_of(bed, session)
            assert leader is not None

            async def failed_back(leader: str = leader) -> bool:
                return await bed.command(session, leader, "/admin/failback") == 200

            await wait_for(failed_back, 30, "a failback the primary's health allows", 0.5)
            await settle(bed)
    return windows, switched


# ------------------------------------------------------------------------ healed partition


async def resume(bed: ReplicaBed, runs: int) -> list[float]:
    times = []
    for run in range(runs):
        async with polling(bed, ["r2"], pause=0.01) as poller:
            cut = time.monotonic()
            bed.cut_from_store()
            await wait_for(lambda cut=cut: poller.first("r2", 503, cut), 30, "r2's 503")
            await asyncio.sleep(0.5)
            healed = time.monotonic()
            bed.heal()
            await wait_for(lambda h=healed: poller.arrived("r2", "gpu", h), 30, "r2 routing")
            back = poller.arrived("r2", "gpu", healed)
            assert back is not None
            times.append(back - healed)
        print(f"resume {run + 1}/{runs}: {times[-1] * 1000:.0f} ms", file=sys.stderr)
        await asyncio.sleep(0.5)
    return times


# ---------------------------------------------------------------------------------- report


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def split_rows(how: str, windows: list[float], moved: list[float]) -> list[tuple[str, ...]]:
    return [
        (
            f"split window after {how} of the primary, median / worst of {len(windows)}",
            f"{statistics.median(windows) * 1000:.0f} / {max(windows) * 1000:.0f} ms",
            "—",
            "—",
        ),
        (
            f"{how} of the primary -> every replica on the standby, median / worst",
            f"{statistics.median(moved):.2f} / {max(moved):.2f} s",
            "—",
            "—",
        ),
    ]


def render(result: dict[str, Any]) -> str:
    t, (pw, pc), r = result["takeover"], result["propagation"], result["resume"]
    rows = [
        ("what", "dumont (this run)", "Patroni defaults", "Kubernetes defaults"),
        (
            f"leader takeover after SIGKILL, median / worst of {len(t)}",
            f"{statistics.median(t):.2f} / {max(t):.2f} s",
            "up to ~30 s (ttl 30, loop_wait 10)",
            "up to ~17 s (lease 15 + retry 2)",
        ),
        (
            f"decision write -> every replica routing, p50 / p99 of {len(pw)}",
            f"{quantile(pw, 0.5) * 1000:.0f} / {quantile(pw, 0.99) * 1000:.0f} ms",
            "—",
            "—",
        ),
        (
            f"admin command -> every replica routing, p50 / p99 of {len(pc)}",
            f"{quantile(pc, 0.5) * 1000:.0f} / {quantile(pc, 0.99) * 1000:.0f} ms",
            "—",
            "—",
        ),
        *split_rows("SIGKILL", *result["split"]),
        *split_rows("SIGSTOP", *result["split_silent"]),
        (
            f"healed partition -> routing again, median / worst of {len(r)}",
            f"{statistics.median(r) * 1000:.0f} / {max(r) * 1000:.0f} ms",
            "—",
            "—",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    small = 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp, ReplicaBed(Path(tmp), hooks=False) as bed:
        result: dict[str, Any] = {"ttl": TTL, "load_before": load()}
        result["takeover"] = await takeover(bed, 3 if args.quick else args.runs)
        result["propagation"] = await propagation(bed, 10 if args.quick else 3 * args.runs)
        result["split"] = await split_window(bed, small)
        result["split_silent"] = await split_window(bed, small, silent=True)
        result["resume"] = await resume(bed, small)
        result["load_after"] = load()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="takeovers (propagations: 3x)")
    parser.add_argument("--quick", action="store_true", help="3 of each")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    print(f"\nReplicas through etcd, lease TTL {TTL} s, health checks every 0.5 s (fall 2):\n")
    print(render(result))
    print(f"\nload average (1/5/15 min): {result['load_before']} before, "
          f"{result['load_after']} after")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
