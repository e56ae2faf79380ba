"""ParkStatus on a fake clock (issue 18): the IDE's notice through a resume (its steps, then the
time it took, for a while), and the money a parked GPU saves, reported or configured."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequest
from proxy.park_status import RESUMED_NOTICE_SECONDS, ParkStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_notice_follows_a_resume_step_by_step_then_says_how_long_it_took() -> None:
    clock = FakeClock()
    park = ParkStatus(clock=clock)
    park.report({"phase": "parked", "gpu_per_hour": 0.5, "outcome": "parked"})
    notice = park.notice()
    assert notice is not None
    assert (notice["phase"], notice["step"], notice["resume_s"]) == ("parked", None, None)

    clock.now += 3600
    for step in ("renting", "filling", "switching"):
        park.report({"phase": "resuming", "detail": f"{step}...", "step": step})
        notice = park.notice()
        assert notice is not None
        assert (notice["phase"], notice["step"]) == ("resuming", step)
    park.report({"standby": "missing"})  # the standby's watch reports meanwhile
    notice = park.notice()
    assert notice is not None
    assert (notice["step"], notice["standby"]) == ("switching", "missing")
    park.report({"standby": "present"})
    clock.now += 19
    park.report({"phase": "active", "detail": "GPU back in 19 s", "resume_s": 19.4})
    notice = park.notice()
    assert notice is not None
    assert (notice["phase"], notice["resume_s"], notice["step"]) == ("resumed", 19, None)
    # Resuming counts as parked: the new GPU costs nothing until it serves.
    assert park.as_json()["gpu_cost_saved"] == round((3600 + 19) / 3600 * 0.5, 4)

    clock.now += RESUMED_NOTICE_SECONDS - 1
    assert park.notice() is not None
    clock.now += 1
    assert park.notice() is None  # old news: the IDE is quiet again


def test_a_new_idle_announcement_replaces_the_resumed_notice() -> None:
    clock = FakeClock()
    park = ParkStatus(clock=clock)
    park.report({"phase": "active", "resume_s": 30.0})
    assert park.notice() is not None
    park.report({"phase": "idle", "idle_s": 1680, "park_in_s": 120, "park_after_s": 1800})
    park.keep()
    assert park.notice() is None  # kept: active, and the resume is no longer news


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"phase": "resuming", "step": "booting"}, "step must be one of renting, filling"),
        ({"phase": "active", "resume_s": -3}, "resume_s must be >= 0; got -3"),
    ],
)
def test_a_bad_report_is_one_line_naming_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        ParkStatus().report(body)
