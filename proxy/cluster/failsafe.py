"""What a replica that lost the store does, the way Patroni's failsafe mode does it.

Out of contact with etcd, a replica cannot tell a partition (it alone is cut off: the others may
already have moved a workspace elsewhere) from the store being down for everyone (nobody can
decide anything; the last decisions still stand). It asks its peers, whose control listeners it
learned from the store while it could read it:

- a peer reached the store well after this replica last did: this replica is the cut-off one,
  and stops routing at once;
- every peer answered and none reached it since this one lost it (or there is no peer): the
  store is lost for everyone, so no decision can have changed; it keeps routing by the last
  decisions, with no switch, for ``store_lost_grace`` seconds, then stops, because machines may
  have died unseen meanwhile;
- a peer did not answer and none reached the store: it cannot tell, and stops routing (the safe
  side: sending someone to a stale IDE loses their work; a 503 with Retry-After loses nothing).

"Well after" compares ages, not clocks (the replicas' clocks need not agree): each peer says how
long ago its last renewal that succeeded was sent. When the store dies, every replica's last
renewal falls within one renewal period (a third of the TTL) of the others'; so a peer whose last
renewal is younger than this replica's by more than that period plus ``slack`` reached a store
this replica could not.

:func:`verdict` is that rule, pure; proxy.cluster.member polls the peers and applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Verdict", "verdict"]


@dataclass(frozen=True)
class Verdict:
    route: bool  # keep routing by the last decisions
    store_lost: bool  # every replica lost the store (as far as anyone can tell)
    why: str


def verdict(
    lost_for: float,
    own_age: float,
    peer_ages: Sequence[float | None],
    period: float,
    grace: float,
    slack: float = 0.5,
) -> Verdict:
    """``lost_for``: seconds since this replica lost contact; ``own_age``: since its last good
    renewal was sent; ``peer_ages``: each peer's (None: it did not answer; infinity: it never
    had contact); ``period``: between renewals."""
    if any(age is not None and age < own_age - period - slack for age in peer_ages):
        return Verdict(False, False, "another replica reaches the store: this one is cut off")
    if any(age is None for age in peer_ages):
        why = "a replica did not answer: cannot tell whether the store is up"
        return Verdict(False, False, why)
    if lost_for < grace:
        return Verdict(True, True, "no replica reaches the store: routing by the last decisions")
    return Verdict(False, True, f"the store has been lost for more than {grace:g} s")
