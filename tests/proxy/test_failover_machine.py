"""The failover state machine, driven with a fake clock: no sockets, no sleeps, exact times."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from proxy.failover import (
    Activate,
    AdminFailback,
    AdminFailover,
    BackendReplaced,
    Cause,
    CheckResult,
    CommandRefused,
    Decision,
    FailoverMachine,
    FirstRequestServed,
    HealthChanged,
    HookFinished,
    PassiveFailure,
    Policy,
    ProbeNow,
    RequestServed,
    Role,
    RunHook,
    State,
    SwitchFinished,
    SwitchRecord,
    SwitchStarted,
    Tick,
)


@dataclass
class Harness:
    """A machine plus a fake clock; every call returns the decisions it produced."""

    machine: FailoverMachine
    now: float = 100.0
    log: list[Decision] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def check(self, role: Role, ok: bool, detail: str = "") -> list[Decision]:
        return self._feed(CheckResult(role, ok, self.now, 0.001 if ok else None, detail))

    def passive(self, role: Role) -> list[Decision]:
        return self._feed(PassiveFailure(role, self.now, "connection refused"))

    def tick(self) -> list[Decision]:
        return self._feed(Tick(self.now))

    def hook(self, name: str, ok: bool, switch_id: int) -> list[Decision]:
        return self._feed(HookFinished(name, switch_id, ok, self.now, "" if ok else "exit 1"))  # type: ignore[arg-type]

    def _feed(self, event: object) -> list[Decision]:
        out = self.machine.handle(event)  # type: ignore[arg-type]
        self.log += out
        return out


def started(policy: Policy | None = None) -> Harness:
    """Both backends healthy, serving the primary."""
    h = Harness(FailoverMachine(policy or Policy(fall=2, rise=3, failback_hold=30.0)))
    h.check("primary", True)
    h.check("standby", True)
    assert h.machine.state == State.SERVING_PRIMARY
    return h


def kinds(decisions: list[Decision]) -> list[type]:
    return [type(d) for d in decisions]


def test_startup_waits_for_the_primary_verdict_before_serving_the_standby() -> None:
    h = Harness(FailoverMachine(Policy()))
    assert h.machine.state == State.UNAVAILABLE
    h.check("standby", True)
    assert h.machine.active is None  # the primary has not answered yet: do not race it
    out = h.check("primary", False)
    # Standby alone at start-up: served, through a failover (its sync must be fenced).
    assert h.machine.active == "standby"
    assert SwitchStarted in kinds(out)


def test_startup_serves_primary_without_a_switch() -> None:
    h = Harness(FailoverMachine(Policy()))
    out = h.check("primary", True)
    assert out == [HealthChanged("primary", True, "ok"), Activate("primary", None, 1)]
    assert h.machine.state == State.SERVING_PRIMARY


def test_fall_failures_switch_to_standby_with_duration_from_first_failure() -> None:
    h = started()
    out = h.check("primary", False, "timed out")
    # One failure short of fall: confirm at once (fastinter), do not switch yet.
    assert out == [ProbeNow("primary")]
    assert h.machine.active == "primary"
    h.advance(0.5)
    out = h.check("primary", False, "timed out")
    assert h.machine.state == State.SERVING_STANDBY
    assert h.machine.active == "standby"
    activate = next(d for d in out if isinstance(d, Activate))
    assert activate == Activate("standby", "primary", 2)
    finished = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert finished.kind == "failover"
    assert finished.outcome == "completed"
    assert finished.duration == pytest.approx(0.5)
    assert "timed out" in finished.reason
    assert kinds(out)[-1] is RunHook
    assert out[-1].hook == "on_failover"


def test_passive_failure_counts_once_and_asks_for_a_probe() -> None:
    h = started()
    assert h.passive("primary") == [ProbeNow("primary")]
    # Thirty concurrent requests failing at once are one observation, and one probe.
    for _ in range(30):
        assert h.passive("primary") == []
    assert h.machine.active == "primary"
    h.check("primary", False, "connection refused")
    assert h.machine.active == "standby"


def test_passive_failure_then_healthy_probe_keeps_primary() -> None:
    h = started()
    h.passive("primary")
    h.check("primary", True)
    assert h.machine.active == "primary"
    assert h.machine.health["primary"].fail_streak == 0


def test_no_healthy_standby_means_unavailable_then_recovery() -> None:
    h = started()
    h.check("standby", False)
    h.check("standby", False)
    h.check("primary", False)
    out = h.check("primary", False)
    assert h.machine.state == State.UNAVAILABLE
    assert Activate(None, "primary", 2) in out
    # The primary returns first: served again, no failover in between.
    for _ in range(3):
        out = h.check("primary", True)
    assert h.machine.state == State.SERVING_PRIMARY
    assert Activate("primary", None, 3) in out


def test_rise_needed_before_a_down_backend_is_up() -> None:
    h = started()
    h.check("primary", False)
    h.check("primary", False)
    assert h.machine.health["primary"].up is False
    h.check("primary", True)
    h.check("primary", True)
    assert h.machine.health["primary"].up is False
    h.check("primary", True)
    assert h.machine.health["primary"].up is True


def test_auto_failback_waits_for_hold_down_then_switches_home() -> None:
    h = started(Policy(fall=2, rise=3, failback="auto", failback_hold=30.0))
    h.check("primary", False)
    h.check("primary", False)
    assert h.machine.active == "standby"
    for _ in range(3):
        h.advance(1)
        h.check("primary", True)
    assert h.machine.failback_available
    h.advance(29.0)
    h.tick()
    assert h.machine.active == "standby"  # 29 s of health is not 30
    h.advance(1.0)
    out = h.tick()
    assert h.machine.active == "primary"
    sw = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert sw.kind == "failback"
    assert RunHook("on_failback", sw) in out


def test_flapping_primary_cannot_bounce_traffic() -> None:
    h = started(Policy(fall=2, rise=3, failback="auto", failback_hold=30.0))
    h.check("primary", False)
    h.check("primary", False)
    switches_before = len(h.machine.history)
    # Up for 10 s, down, up again... for five minutes: never healthy for a whole hold-down.
    for _ in range(20):
        for _ in range(3):
            h.advance(3)
            h.check("primary", True)
        h.advance(3)
        h.check("primary", False)
        h.check("primary", False)
    assert h.machine.active == "standby"
    assert len(h.machine.history) == switches_before


def test_manual_failback_waits_for_the_command() -> None:
    h = started(Policy(failback="manual", failback_hold=30.0))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.advance(3600)
    h.tick()
    assert h.machine.active == "standby"
    assert h.machine.failback_available
    out = h.machine.handle(AdminFailback(h.now))
    assert h.machine.active == "primary"
    assert next(d for d in out if isinstance(d, SwitchFinished)).switch.reason.startswith("admin")


def test_before_failback_hook_gates_the_switch_and_standby_keeps_serving() -> None:
    h = started(Policy(failback="manual", before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    out = h.machine.handle(AdminFailback(h.now))
    run = next(d for d in out if isinstance(d, RunHook))
    assert run.hook == "before_failback"
    assert h.machine.state == State.SWITCHING
    assert h.machine.target == "primary"
    assert h.machine.active == "standby"  # the user keeps working while files are copied home
    h.advance(4.0)
    out = h.hook("before_failback", True, run.switch.id)
    assert h.machine.active == "primary"
    assert h.machine.state == State.SERVING_PRIMARY
    done = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert done.duration == pytest.approx(4.0)


def test_failed_before_failback_abandons_and_blocks_auto_retry_for_a_hold_down() -> None:
    h = started(Policy(failback="auto", failback_hold=30.0, before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.advance(30)
    out = h.tick()
    run = next(d for d in out if isinstance(d, RunHook))
    out = h.hook("before_failback", False, run.switch.id)
    finished = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert finished.outcome == "abandoned"
    assert "before_failback failed" in finished.detail
    assert h.machine.state == State.SERVING_STANDBY
    h.advance(29)
    assert not any(isinstance(d, RunHook) for d in h.tick())
    h.advance(1)
    assert any(isinstance(d, RunHook) and d.hook == "before_failback" for d in h.tick())


def test_before_failover_blocks_routing_until_the_fence_is_up() -> None:
    h = started(Policy(before_failover=True))
    h.check("primary", False)
    out = h.check("primary", False)
    run = next(d for d in out if isinstance(d, RunHook))
    assert run.hook == "before_failover"
    assert h.machine.state == State.SWITCHING
    assert h.machine.active is None
    h.advance(0.2)
    # Even a failed fence does not leave the user without a machine: the primary is dead.
    out = h.hook("before_failover", False, run.switch.id)
    assert h.machine.active == "standby"
    done = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert "before_failover failed" in done.detail


def test_stale_hook_results_are_ignored() -> None:
    h = started(Policy(before_failback=True, failback="manual"))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.machine.handle(AdminFailback(h.now))
    assert h.hook("before_failback", True, switch_id=999) == []
    assert h.machine.state == State.SWITCHING


def test_standby_death_while_serving_it_goes_home_at_once() -> None:
    h = started(Policy(failback="manual", before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.check("standby", False)
    out = h.check("standby", False)
    assert h.machine.active == "primary"
    sw = next(d for d in out if isinstance(d, SwitchFinished)).switch
    assert sw.kind == "recovery"  # no before_failback: its source is dead
    assert not any(isinstance(d, RunHook) and d.hook == "before_failback" for d in out)


def test_target_dying_during_failback_abandons_it() -> None:
    h = started(Policy(failback="manual", before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.machine.handle(AdminFailback(h.now))
    h.check("primary", False)
    out = h.check("primary", False)
    assert h.machine.state == State.SERVING_STANDBY
    assert next(d for d in out if isinstance(d, SwitchFinished)).switch.outcome == "abandoned"


@pytest.mark.parametrize(
    ("setup", "command", "reason"),
    [
        ("serving_standby", AdminFailover, "needs state serving_primary"),
        ("standby_down", AdminFailover, "standby is not healthy"),
        ("serving_primary", AdminFailback, "needs state serving_standby"),
    ],
)
def test_admin_commands_refused_with_a_reason(setup: str, command: type, reason: str) -> None:
    h = started()
    if setup == "serving_standby":
        h.machine.handle(AdminFailover(h.now))
    if setup == "standby_down":
        h.check("standby", False)
        h.check("standby", False)
    out = h.machine.handle(command(h.now))
    assert len(out) == 1
    assert isinstance(out[0], CommandRefused)
    assert reason in out[0].reason


def test_admin_failover_switches_with_zero_detection_time() -> None:
    h = started()
    out = h.machine.handle(AdminFailover(h.now))
    assert h.machine.active == "standby"
    assert next(d for d in out if isinstance(d, SwitchFinished)).switch.duration == 0.0


def test_replaced_backend_starts_unknown_and_is_probed() -> None:
    h = started()
    h.machine.handle(AdminFailover(h.now))
    out = h.machine.handle(BackendReplaced("primary", h.now, "http://new-gpu:8080"))
    assert ProbeNow("primary") in out
    assert h.machine.health["primary"].up is None
    assert not h.machine.failback_available
    h.check("primary", True)
    assert h.machine.failback_available


def test_epoch_increments_on_every_change_of_route() -> None:
    h = started()
    assert h.machine.epoch == 1
    h.machine.handle(AdminFailover(h.now))
    assert h.machine.epoch == 2
    h.machine.handle(AdminFailback(h.now))
    assert h.machine.epoch == 3


def test_history_is_bounded() -> None:
    h = started(Policy(failback="manual"))
    for _ in range(60):
        h.machine.handle(AdminFailover(h.now))
        h.machine.handle(AdminFailback(h.now))
    assert len(h.machine.history) == 50


def test_admin_failover_is_not_undone_by_auto_failback() -> None:
    h = started(Policy(failback="auto", failback_hold=30.0))
    h.advance(3600)  # the primary has been healthy for an hour
    h.machine.handle(AdminFailover(h.now))
    for _ in range(100):
        h.advance(1)
        h.check("primary", True)
    assert h.machine.active == "standby"  # the operator's choice holds
    assert h.machine.failback_available
    h.machine.handle(AdminFailback(h.now))
    assert h.machine.active == "primary"
    # Back to normal: a later health-driven failover fails back on its own again.
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.advance(1)
        h.check("primary", True)
    h.advance(30)
    h.tick()
    assert h.machine.active == "primary"


# ------------------------------------------------------------------------------ why: Cause


def finished_switch(out: list[Decision]) -> SwitchRecord:
    return next(d for d in out if isinstance(d, SwitchFinished)).switch


def test_a_failover_by_active_checks_says_so_on_the_health_change_and_the_switch() -> None:
    h = started()
    h.check("primary", False, "timed out")
    out = h.check("primary", False, "timed out")
    change = next(d for d in out if isinstance(d, HealthChanged))
    assert (change.up, change.cause) == (False, Cause.ACTIVE_CHECK)
    assert finished_switch(out).cause is Cause.ACTIVE_CHECK
    assert h.machine.health["primary"].down_cause is Cause.ACTIVE_CHECK


def test_a_failover_by_failing_requests_is_caused_by_the_passive_failure() -> None:
    h = started()
    h.check("primary", False, "timed out")  # one short of fall
    out = h.passive("primary")  # a real request fails too: that is the second failure
    change = next(d for d in out if isinstance(d, HealthChanged))
    assert change == HealthChanged(
        "primary", False, "passive: connection refused", Cause.PASSIVE_FAILURE
    )
    record = finished_switch(out)
    assert (record.kind, record.cause) == ("failover", Cause.PASSIVE_FAILURE)
    # Back up by active checks: the down cause is gone with the fall.
    for _ in range(3):
        h.check("primary", True)
    assert h.machine.health["primary"].down_cause is None


@pytest.mark.parametrize("cause", [Cause.ADMIN, Cause.SWITCHOVER, Cause.PARK])
def test_a_commanded_failover_carries_the_command_cause(cause: Cause) -> None:
    h = started()
    out = h.machine.handle(AdminFailover(h.now, f"{cause}: asked", cause))
    assert finished_switch(out).cause is cause


def test_automatic_failback_and_a_resumed_failback_have_their_own_causes() -> None:
    h = started(Policy(fall=2, rise=3, failback="auto", failback_hold=30.0))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.advance(30.0)
    assert finished_switch(h.tick()).cause is Cause.FAILBACK

    h.machine.handle(AdminFailover(h.now, "park: idle", Cause.PARK))
    out = h.machine.handle(AdminFailback(h.now, "resume: GPU filled", Cause.RESUME))
    assert finished_switch(out).cause is Cause.RESUME


def test_serving_the_standby_at_start_up_is_a_recovery() -> None:
    h = Harness(FailoverMachine(Policy()))
    h.check("standby", True)
    out = h.check("primary", False)
    assert finished_switch(out).cause is Cause.RECOVERY


def test_a_failed_before_failback_hook_abandons_the_failback_by_hook_failure() -> None:
    h = started(Policy(fall=2, rise=3, failback="manual", before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    out = h.machine.handle(AdminFailback(h.now))
    switch_id = next(d for d in out if isinstance(d, SwitchStarted)).switch.id
    record = finished_switch(h.hook("before_failback", False, switch_id))
    assert (record.outcome, record.cause, record.abandoned_by) == (
        "abandoned",
        Cause.ADMIN,
        Cause.HOOK_FAILURE,
    )


def test_a_target_lost_during_the_switch_names_how_it_was_lost() -> None:
    h = started(Policy(fall=2, rise=3, failback="manual", before_failback=True))
    h.check("primary", False)
    h.check("primary", False)
    for _ in range(3):
        h.check("primary", True)
    h.machine.handle(AdminFailback(h.now))
    h.check("primary", False)
    record = finished_switch(h.passive("primary"))
    assert (record.outcome, record.abandoned_by) == ("abandoned", Cause.PASSIVE_FAILURE)


# ---------------------------------------------------------- the first request after a switch


def test_the_first_request_the_new_backend_serves_ends_the_switch_once() -> None:
    h = started()
    h.advance(1.0)
    h.check("primary", False)
    h.advance(0.5)
    h.check("primary", False)
    record = h.machine.history[-1]
    assert h.machine.awaiting_service == record
    # The old backend answering a late request is not the switch's end.
    assert h.machine.handle(RequestServed("primary", h.now + 0.1)) == []
    out = h.machine.handle(RequestServed("standby", h.now + 2.0))
    served = next(d for d in out if isinstance(d, FirstRequestServed)).switch
    assert (served.id, served.served_at) == (record.id, h.now + 2.0)
    assert served.served_at is not None
    assert served.served_at - served.detected_at == pytest.approx(2.5)
    assert h.machine.history[-1] == served  # the history shows it too
    # Reported once: later requests are ordinary ones.
    assert h.machine.handle(RequestServed("standby", h.now + 3.0)) == []


def test_no_first_request_is_awaited_before_a_switch_or_after_traffic_moved_on() -> None:
    h = Harness(FailoverMachine(Policy()))
    h.check("primary", True)  # start-up serves the primary: no switch to confirm
    assert h.machine.handle(RequestServed("primary", h.now)) == []
    h = started()
    h.check("primary", False)
    h.check("primary", False)
    h.check("standby", False)
    h.check("standby", False)  # nothing serves: the switch's first request cannot come now
    assert h.machine.awaiting_service is None
    assert h.machine.handle(RequestServed("standby", h.now)) == []


def test_the_pages_spell_the_machine_states_as_the_machine_does() -> None:
    from typing import get_args

    from proxy.pages import SwitchState

    assert set(get_args(SwitchState)) == {str(state) for state in State}
