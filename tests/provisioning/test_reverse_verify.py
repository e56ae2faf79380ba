"""Which differences after a reverse sync are losses: the rule that lets a live standby go home."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import pytest

from provisioning import reverse_sync as reverse_sync_module
from provisioning.errors import RemoteCommandError, ReverseSyncError
from provisioning.lsyncd_config import LsyncdSettings, SyncRoot
from provisioning.reverse_sync import first_rsync_complaint, rsync_transferred, unchanged_since
from provisioning.ssh import SshHost
from provisioning.sync import SyncController, SyncTopology

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


class _ScriptedGpu:
    """run_remote for the pull: each call pops the next outcome (an exit code or stats text)."""

    def __init__(self, *outcomes: int | str) -> None:
        self.outcomes = list(outcomes)
        self.scripts: list[str] = []

    async def __call__(self, host: object, script: str, *, timeout: float) -> str:
        self.scripts.append(script)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, int):
            stderr = 'rsync: read errors mapping "/s/state.json": No data available (61)\n'
            raise RemoteCommandError(f"exit {outcome}", returncode=outcome, stderr=stderr)
        return outcome


def _controller(tmp_path: Path) -> SyncController:
    host = SshHost("127.0.0.1")
    root = SyncRoot("user-data", str(tmp_path / "gpu"), str(tmp_path / "standby"))
    settings = LsyncdSettings(state_dir=str(tmp_path / "state"))
    topology = SyncTopology(
        gpu=host, standby=host, standby_from_gpu=host, roots=(root,), settings=settings
    )
    return SyncController(topology)


STATS = "Number of regular files transferred: 2\nTotal transferred file size: 10\n"


async def test_a_pass_that_lost_a_file_to_a_live_rewrite_is_run_again_with_its_own_backup_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu = _ScriptedGpu(23, 24, STATS)
    monkeypatch.setattr(reverse_sync_module, "run_remote", gpu)
    controller = _controller(tmp_path)
    root = controller.topology.roots[0]
    copied = await reverse_sync_module.pull_root(controller, root, backup_root="/b", timeout=5)
    assert copied == (2, 10)
    backups = [re.search(r"--backup-dir=(\S+)", script).group(1) for script in gpu.scripts]  # type: ignore[union-attr]
    assert backups == ["/b/user-data", "/b/user-data.pass2", "/b/user-data.pass3"]


@pytest.mark.parametrize(("codes", "passes"), [((23, 23, 23), 3), ((12,), 1)])
async def test_a_lasting_or_other_rsync_failure_is_reported_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codes: tuple[int, ...], passes: int
) -> None:
    gpu = _ScriptedGpu(*codes)
    monkeypatch.setattr(reverse_sync_module, "run_remote", gpu)
    controller = _controller(tmp_path)
    with pytest.raises(ReverseSyncError, match=rf"on pass {passes}: .*state\.json"):
        await reverse_sync_module.pull_root(
            controller, controller.topology.roots[0], backup_root="/b", timeout=5
        )
    assert len(gpu.scripts) == passes
