"""bench/peers/delaylink.py: the 100 ms link issue 19's far-away benchmark runs Chromium behind.

The delay is what ping measures across it; a TCP SYN from the far side is counted; and the
namespace, both TUN devices, the forwarding program and whatever ran in the namespace are gone
after the block, also when the block raised.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.peers.delaylink import DelayLink, delay_link
from tests.e2e.hosts import namespaces_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _root_and_tools() -> None:
    why = namespaces_available()
    if why:
        pytest.fail(f"the delay link needs network namespaces (ip netns add): {why}")
    if shutil.which("ping") is None:
        pytest.fail("ping is missing: run `bash scripts/install-debian-deps.sh` (iputils-ping)")


def _gone(link: DelayLink) -> list[str]:
    """What of ``link`` is still there (empty when everything was cleaned up)."""
    left = []
    if link.netns in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout:
        left.append(f"namespace {link.netns}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left += [f"device {dev}" for dev in (link.near_dev, link.far_dev) if dev in links]
    assert link.process is not None
    if link.process.poll() is None:
        left.append(f"program pid {link.process.pid}")
    return left


def test_ping_across_the_link_takes_the_round_trip(tmp_path: Path) -> None:
    with delay_link(100, tmp_path) as link:
        low, avg, high = link.ping(count=10)  # raises if a packet was lost
        # Loopback answers in microseconds: all of it is the link's hold, in each direction.
        assert 90 <= low <= avg <= high <= 130, (low, avg, high)
    assert _gone(link) == []


def test_counts_the_connections_the_far_side_opens(tmp_path: Path) -> None:
    with delay_link(20, tmp_path) as link:
        # Port 9 (discard) is closed here: refused, but the SYN crossed the link.
        for _ in range(2):
            subprocess.run(
                link.exec_argv(["curl", "-s", "-m", "3", f"http://{link.near}:9/"]),
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
        assert link.syns() == {f"{link.near}:9": 2}
    assert _gone(link) == []


def _fail_inside(tmp_path: Path, started: list[object]) -> None:
    with delay_link(20, tmp_path) as link:
        started.append(link)
        # A process left behind in the namespace, in a session of its own (as Chromium's is).
        started.append(subprocess.Popen(link.exec_argv(["sleep", "300"]), start_new_session=True))
        raise RuntimeError("the benchmark failed")


def test_cleans_up_when_the_block_fails(tmp_path: Path) -> None:
    started: list[object] = []
    with pytest.raises(RuntimeError, match="the benchmark failed"):
        _fail_inside(tmp_path, started)
    link, sleeper = started
    assert isinstance(link, DelayLink)
    assert isinstance(sleeper, subprocess.Popen)
    assert sleeper.wait(timeout=10) != 0
    assert _gone(link) == []
    assert not os.path.exists(link.stats_path)
