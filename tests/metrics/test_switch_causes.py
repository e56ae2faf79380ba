"""The metrics report the machine's causes, and time a switch to its first served request, through
a real Workspace driven by a fake clock (no sockets: the health checker is never started)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from proxy.config import Config
from proxy.control_app import cause_of
from proxy.dashboard.savings import SavingsLedger
from proxy.failover import Cause, CheckResult, FirstRequestServed
from proxy.metrics import SWITCH_REASONS, ProxyMetrics, switch_reason
from proxy.sync_report import SyncReport
from proxy.workspace import Workspace

CONFIG = Config(primary=URL("http://127.0.0.1:1"), standby=URL("http://127.0.0.1:2"))


async def test_a_passive_switch_is_counted_by_its_cause_and_timed_to_the_first_answer() -> None:
    clock = [100.0]
    workspace = Workspace(CONFIG, now=lambda: clock[0])
    metrics = ProxyMetrics(workspace, SyncReport(), now=lambda: clock[0])
    served: list[FirstRequestServed] = []
    workspace.observers += [
        metrics.observe,
        lambda item: served.append(item) if isinstance(item, FirstRequestServed) else None,
    ]
    primary, standby = workspace.backends["primary"], workspace.backends["standby"]
    try:
        for role in ("primary", "standby"):
            workspace.feed(CheckResult(role, True, clock[0], 0.001))
        workspace.feed(CheckResult("primary", False, 101.0, None, "timed out"))
        clock[0] = 101.5
        workspace.report_passive_failure(primary, "connection refused")
        assert workspace.machine.active == "standby"
        assert workspace.machine.history[-1].cause is Cause.PASSIVE_FAILURE
        clock[0] = 103.0
        workspace.note_served(standby, 502)  # an error page is not the user's work back
        workspace.note_served(primary, 200)  # a late answer from the old backend
        assert served == []
        clock[0] = 104.0
        workspace.note_served(standby, 200)
        workspace.note_served(standby, 200)  # only the first one counts
        assert [s.switch.served_at for s in served] == [104.0]
        assert workspace.status()["switches"][0]["cause"] == "passive_failure"

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples
        }
        switches = {
            labels: v for (name, labels), v in samples.items() if name == "dumont_switches_total"
        }
        passive = (("from", "primary"), ("reason", "passive"), ("to", "standby"))
        assert switches.pop(passive) == 1.0
        assert set(switches.values()) == {0.0}  # every other reason, exported at zero
        duration = (("kind", "failover"),)
        assert samples["dumont_switch_duration_seconds_count", duration] == 1.0
        # From the first failed check (101.0) to the standby's first good answer (104.0).
        assert samples["dumont_switch_duration_seconds_sum", duration] == 3.0
    finally:
        await workspace.close()


def test_every_cause_that_starts_a_switch_has_a_reason_label() -> None:
    starting = set(Cause) - {Cause.HOOK_FAILURE}
    assert {switch_reason(cause) for cause in starting} == set(SWITCH_REASONS)


async def test_a_park_is_not_an_interruption_survived_and_a_lost_gpu_is() -> None:
    clock = [100.0]
    workspace = Workspace(CONFIG, now=lambda: clock[0])
    ledger = SavingsLedger()
    workspace.observers.append(ledger.observe)
    try:
        for role in ("primary", "standby"):
            workspace.feed(CheckResult(role, True, clock[0], 0.001))
        workspace.failover("park: idle for 30 min", Cause.PARK)
        workspace.failback("resume: GPU 7 filled", Cause.RESUME)
        assert [s.cause for s in workspace.machine.history] == [Cause.PARK, Cause.RESUME]
        assert ledger.interruptions == 0
        workspace.feed(CheckResult("primary", False, 101.0))
        workspace.feed(CheckResult("primary", False, 102.0))
        assert workspace.machine.active == "standby"
        assert ledger.interruptions == 1
    finally:
        await workspace.close()


def test_the_control_api_reads_a_planned_switch_cause_from_the_reason_prefix() -> None:
    assert cause_of("park: idle for 30 min", Cause.ADMIN) is Cause.PARK
    assert cause_of("switchover: maintenance", Cause.ADMIN) is Cause.SWITCHOVER
    assert cause_of("resume: GPU 7 filled", Cause.ADMIN) is Cause.RESUME
    assert cause_of("admin: failover requested", Cause.ADMIN) is Cause.ADMIN
    assert cause_of("parking lot: no colon prefix match", Cause.ADMIN) is Cause.ADMIN
    assert cause_of("maintenance window", Cause.SWITCHOVER) is Cause.SWITCHOVER
