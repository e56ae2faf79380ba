"""The continuity report's verdicts: a bar is met only when every scenario measured it."""

from __future__ import annotations

from typing import Any

from tests.e2e.report import judge


def _scenario(fault: str, failback: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "fault": fault,
        "rpo": {"missing_written_2s_before_fault": []},
        "saved_edits_on_standby": {"notes.md": True},
        "saved_age_at_fault_s": {"notes.md": 10.0},
        "usable": {"usable_s": 12.0, "clicked": False},
        "failback": failback,
    }


def _failback_bar(scenarios: list[dict[str, Any]]) -> Any:
    return next(b for b in judge(scenarios) if "failback" in b["bar"])["met"]


def test_failback_bar_is_met_only_when_every_scenario_failed_back_without_loss() -> None:
    done = {"outcome": "completed", "attempts": [{}], "standby_writes_lost": []}
    assert _failback_bar([_scenario("loud", done), _scenario("frozen", done)]) is True


def test_a_scenario_that_never_reached_failback_leaves_the_bar_unproven() -> None:
    done = {"outcome": "completed", "attempts": [{}], "standby_writes_lost": []}
    assert _failback_bar([_scenario("loud", None), _scenario("frozen", done)]) is None


def test_a_loss_or_an_abandoned_failback_fails_the_bar() -> None:
    lost = {"outcome": "completed", "attempts": [{}], "standby_writes_lost": ["notes.md"]}
    abandoned = {"outcome": "abandoned", "attempts": [{}, {}, {}], "standby_writes_lost": []}
    assert _failback_bar([_scenario("loud", lost), _scenario("frozen", None)]) is False
    assert _failback_bar([_scenario("partition", abandoned)]) is False
