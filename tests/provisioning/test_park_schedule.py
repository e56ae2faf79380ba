"""Scheduled resume (issue 18): the schedule's arithmetic on fixed times, its one-line errors, and
``pair autopark`` running on after a park: at the scheduled time no offer matches, so the pair
stays parked and says when it tries again; with offers back, the next try brings the GPU back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisioning.errors import UsageError
from provisioning.resume_schedule import ResumeSchedule
from provisioning.store import PairState, PairStore
from tests.provisioning.conftest import FakeClouds, SyncBed
from tests.provisioning.park_bed import PAIR, pair_process, park_bed, until
from tests.provisioning.test_gpu_idle import fake_nvidia_smi


def schedule(*entries: str, timezone: str = "UTC") -> ResumeSchedule:
    parsed = ResumeSchedule.parse(entries, timezone)
    assert parsed is not None
    return parsed


def test_weekday_windows_in_the_pairs_time_zone() -> None:
    workdays = schedule("mon-fri 08:30", timezone="America/Sao_Paulo")  # UTC-3, no DST
    friday_evening = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)  # 18:00 in Sao Paulo
    # Saturday and Sunday are skipped: Monday 08:30 local is 11:30 UTC.
    assert workdays.next_after(friday_evening) == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert workdays.describe(workdays.next_after(friday_evening)) == (
        "mon 08:30:00 America/Sao_Paulo"
    )
    monday_early = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert workdays.next_after(monday_early) == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    exactly = datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert workdays.next_after(exactly) == datetime(2026, 12, 8, 11, 30, tzinfo=UTC)


def test_several_windows_a_wrapping_range_and_daily() -> None:
    weekend = schedule("fri-mon 10:00", "wed 07:15:30")
    thursday = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert weekend.next_after(thursday) == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    tuesday = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert weekend.next_after(tuesday) == datetime(2026, 12, 9, 7, 15, 30, tzinfo=UTC)
    daily = schedule("daily 23:59")
    assert daily.next_after(tuesday) == datetime(2026, 12, 8, 23, 59, tzinfo=UTC)


def test_wall_clock_times_across_daylight_saving() -> None:
    lisbon = schedule("daily 08:30", timezone="Europe/Lisbon")
    # Lisbon moves from UTC+1 to UTC+0 on 2026-10-25: 08:30 stays 08:30 on the wall.
    before = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    assert lisbon.next_after(before) == datetime(2026, 10, 25, 8, 30, tzinfo=UTC)
    assert lisbon.next_after(before - timedelta(days=1)) == datetime(
        2026, 10, 24, 7, 30, tzinfo=UTC
    )


def test_due_once_a_scheduled_time_passed_since_the_park() -> None:
    workdays = schedule("mon-fri 08:30")
    parked = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)  # Friday
    assert not workdays.due(parked, datetime(2026, 12, 7, 8, 29, 59, tzinfo=UTC))
    assert workdays.due(parked, datetime(2026, 12, 7, 8, 30, tzinfo=UTC))


def test_no_entries_is_no_schedule() -> None:
    assert ResumeSchedule.parse([], "UTC") is None
    assert ResumeSchedule.parse([" "], "Nowhere/Else") is None


@pytest.mark.parametrize(
    ("entries", "timezone", "message"),
    [
        (["weekdays 08:30"], "UTC", "entry 'weekdays 08:30': 'weekdays' is not a day"),
        (["mon-fri 8h30"], "UTC", "bad resume_at entry 'mon-fri 8h30': expected DAYS HH:MM"),
        (["mon 24:00"], "UTC", "bad resume_at entry 'mon 24:00': no such time of day"),
        (["mon 08:30"], "Mars/Olympus", "bad timezone 'Mars/Olympus': expected an IANA name"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    entries: list[str], timezone: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        ResumeSchedule.parse(entries, timezone)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_autopark_resumes_on_schedule_and_retries_while_no_offer_matches(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path
) -> None:
    smi = fake_nvidia_smi(tmp_path / "smi", "0\n")
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        # A scheduled time every 5 s: the first after the park is the one that counts.
        now = datetime.now(UTC)
        times = [now + timedelta(seconds=s) for s in range(10, 240, 5)]
        flags = [f"--resume-at=daily {t:%H:%M:%S}" for t in times]
        flags += ["--nvidia-smi=" + str(smi), "--park-after=1", "--announce=0.5"]
        flags += ["--check-interval=0.2", "--offer-retry-interval=1.5"]
        log = tmp_path / "autopark.err"
        offers, clouds.vast.offers = clouds.vast.offers, []  # nothing to rent for now
        async with pair_process(pb, "autopark", log, *flags):

            def parked() -> bool:
                return PairStore(pb.store).get(PAIR).state is PairState.PARKED

            await until(parked, "the idle GPU parked", 120)
            (smi.parent / "pids").write_text("4242\n")  # the next GPU will be busy
            await until(lambda: "the GPU comes back at " in log.read_text(), "the schedule", 30)

            async def still_parked_says_so() -> bool:
                detail = str((await pb.park_state())["detail"])
                return detail.startswith("no GPU offer matches, still parked") and (
                    "; next try at " in detail
                )

            await until(still_parked_says_so, "the scheduled resume finding no offer", 120)
            assert parked()
            assert not clouds.vast.instances
            assert "no GPU offer: still parked, next try at " in log.read_text()

            clouds.vast.offers = offers

            def resumed() -> bool:
                return PairStore(pb.store).get(PAIR).state is PairState.READY

            await until(resumed, "the retry bringing the GPU back", 180)
            await until(lambda: pb.serving("primary"), "the failback", 60)
            await until(lambda: "resumed on schedule" in log.read_text(), "autopark's word", 30)
            assert (await pb.park_state())["last_resume_s"] > 0
