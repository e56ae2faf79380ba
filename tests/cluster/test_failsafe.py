"""The rule of a replica that lost the store (proxy.cluster.failsafe), pure: ages in seconds."""

from __future__ import annotations

from proxy.cluster.failsafe import verdict

PERIOD = 1.0  # a third of a 3 s lease
GRACE = 60.0


def test_a_peer_that_reached_the_store_after_this_replica_means_this_one_is_cut_off() -> None:
    found = verdict(0.1, own_age=3.1, peer_ages=[0.4, 3.0], period=PERIOD, grace=GRACE)
    assert not found.route
    assert not found.store_lost


def test_peers_that_lost_it_within_a_renewal_period_mean_the_store_is_lost_for_all() -> None:
    # The store died: the peers' last renewals were sent up to a period after ours.
    found = verdict(0.1, own_age=3.1, peer_ages=[2.2, 3.3], period=PERIOD, grace=GRACE)
    assert found.route
    assert found.store_lost
    later = verdict(GRACE + 1, own_age=64.0, peer_ages=[63.1, 64.2], period=PERIOD, grace=GRACE)
    assert not later.route
    assert later.store_lost


def test_a_peer_that_does_not_answer_leaves_no_way_to_tell() -> None:
    found = verdict(0.1, own_age=3.1, peer_ages=[None, 3.3], period=PERIOD, grace=GRACE)
    assert not found.route


def test_alone_or_with_peers_that_never_had_contact_the_last_decisions_hold() -> None:
    assert verdict(0.1, own_age=3.1, peer_ages=[], period=PERIOD, grace=GRACE).route
    inf = float("inf")
    assert verdict(0.1, own_age=3.1, peer_ages=[inf], period=PERIOD, grace=GRACE).route
