"""Which differences after a reverse sync are losses: the rule that lets a live standby go home."""

from __future__ import annotations

import calendar
import time

from provisioning.reverse_sync import first_rsync_complaint, rsync_transferred, unchanged_since

COPY_STARTED = calendar.timegm(time.strptime("2026/11/28-21:00:00", "%Y/%m/%d-%H:%M:%S")) + 0.4


def test_a_file_older_than_the_copy_that_still_differs_is_a_loss() -> None:
    out = "2026/11/28-20:59:59 notes.md\n"
    assert unchanged_since(out, COPY_STARTED) == ["notes.md"]


def test_files_changed_during_the_copy_and_directories_are_not_losses() -> None:
    out = (
        "2026/11/28-21:00:00 User/workspaceStorage/1/state.json\n"  # the second the copy began
        "2026/11/28-21:00:07 draft.txt\n"
        "2026/11/28-20:00:00 User/\n"
    )
    assert unchanged_since(out, COPY_STARTED) == []


def test_a_line_it_cannot_read_is_never_passed_silently() -> None:
    assert unchanged_since("rsync: something odd\n", COPY_STARTED) == ["rsync: something odd"]
    assert unchanged_since("\n\n", COPY_STARTED) == []


def test_the_error_names_rsyncs_first_complaint_not_its_summary() -> None:
    stderr = (
        'rsync: [generator] failed to set times on "/workspace/.": Operation not permitted (1)\n'
        'file has vanished: "/workspace/tmp.swp"\n'
        "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n"
    )
    assert first_rsync_complaint(stderr).startswith("rsync: [generator] failed to set times")
    assert first_rsync_complaint("rsync error: (code 23)\n") == ""


def test_stats_give_what_the_standby_sent() -> None:
    stats = (
        "Number of files: 12 (reg: 9, dir: 3)\n"
        "Number of regular files transferred: 2\n"
        "Total file size: 3,000,062 bytes\n"
        "Total transferred file size: 1,234,567 bytes\n"
    )
    assert rsync_transferred(stats) == (2, 1_234_567)
    assert rsync_transferred("") == (0, 0)
