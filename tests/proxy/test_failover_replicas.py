"""The failover machine among proxy replicas (issue 16): following the leader's decisions
(``Adopt``) and weighing the other replicas' views (``PeerViews``), with a fake clock."""

from __future__ import annotations

from proxy.failover import (
    Activate,
    AdminFailover,
    Adopt,
    CheckResult,
    CommandRefused,
    Decision,
    Event,
    FailoverMachine,
    PeerViews,
    Policy,
    Role,
    RunHook,
    State,
    SwitchFinished,
)

GRACE = 2.0


class Clocked:
    def __init__(self, **policy: object) -> None:
        self.machine = FailoverMachine(Policy(fall=2, rise=1, view_grace=GRACE, **policy))  # type: ignore[arg-type]
        self.now = 100.0

    def feed(self, event: Event) -> list[Decision]:
        return self.machine.handle(event)

    def check(self, role: Role, ok: bool) -> list[Decision]:
        return self.feed(CheckResult(role, ok, self.now, 0.001 if ok else None))

    def peers(self, count: int, primary_down: int = 0, standby_down: int = 0) -> list[Decision]:
        down: dict[Role, int] = {"primary": primary_down, "standby": standby_down}
        return self.feed(PeerViews(self.now, count, down))

    def serving_primary(self) -> None:
        self.check("primary", True)
        self.check("standby", True)
        assert self.machine.state is State.SERVING_PRIMARY

    def primary_dies(self) -> list[Decision]:
        return [*self.check("primary", False), *self.check("primary", False)]


def activations(decisions: list[Decision]) -> list[Role | None]:
    return [d.role for d in decisions if isinstance(d, Activate)]


def test_alone_a_down_primary_is_left_at_once() -> None:
    m = Clocked()
    m.serving_primary()
    assert activations(m.primary_dies()) == ["standby"]


def test_the_leader_alone_seeing_the_primary_down_waits_for_the_grace() -> None:
    m = Clocked()
    m.serving_primary()
    m.peers(2)
    assert activations(m.primary_dies()) == []
    assert m.machine.state is State.SERVING_PRIMARY
    m.now += GRACE - 0.1
    assert activations(m.check("primary", False)) == []
    m.now += 0.2
    assert activations(m.check("primary", False)) == ["standby"]


def test_one_other_replica_agreeing_is_enough() -> None:
    m = Clocked()
    m.serving_primary()
    m.peers(2)
    m.primary_dies()
    assert activations(m.peers(2, primary_down=1)) == ["standby"]


def test_another_replica_alone_seeing_it_down_changes_nothing() -> None:
    m = Clocked()
    m.serving_primary()
    assert activations(m.peers(2, primary_down=2)) == []
    m.now += 60
    assert activations(m.check("primary", True)) == []


def test_a_follower_counts_health_but_never_switches() -> None:
    m = Clocked()
    m.serving_primary()
    assert activations(m.feed(Adopt(m.now, "primary", deciding=False))) == []
    m.primary_dies()
    assert m.machine.health["primary"].up is False
    assert m.machine.active == "primary"
    refused = m.feed(AdminFailover(m.now))
    assert any(isinstance(d, CommandRefused) for d in refused)
    # The leader's decision moves it; no hook runs on a follower.
    moved = m.feed(Adopt(m.now, "standby", deciding=False))
    assert activations(moved) == ["standby"]
    assert not any(isinstance(d, RunHook) for d in moved)
    assert m.machine.state is State.SERVING_STANDBY


def test_a_new_leader_starts_from_the_decision_and_acts_on_its_own_view() -> None:
    m = Clocked()
    m.serving_primary()
    m.feed(Adopt(m.now, "primary", deciding=False))
    m.primary_dies()
    # Elected: the decision said primary, which its own checks see down, and it is alone.
    assert activations(m.feed(Adopt(m.now, "primary", deciding=True))) == ["standby"]


def test_adopting_abandons_a_switch_in_progress() -> None:
    m = Clocked(before_failover=True)
    m.serving_primary()
    m.primary_dies()
    assert m.machine.state is State.SWITCHING
    out = m.feed(Adopt(m.now, "standby", deciding=False))
    finished = [d for d in out if isinstance(d, SwitchFinished)]
    assert finished
    assert finished[0].switch.outcome == "abandoned"
    assert m.machine.state is State.SERVING_STANDBY


def test_an_operators_failover_travels_as_a_pin() -> None:
    m = Clocked(failback_hold=1.0)
    m.serving_primary()
    m.feed(Adopt(m.now, "standby", deciding=True, pinned=True))
    m.now += 10
    assert activations(m.check("primary", True)) == []  # pinned: no automatic failback
    unpinned = m.feed(Adopt(m.now, "standby", deciding=True, pinned=False))
    assert activations(unpinned) == ["primary"]
