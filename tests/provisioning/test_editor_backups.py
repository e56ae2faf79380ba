"""Stale hot-exit backups are dropped on the standby at fence time; unsaved work never is.

The backups are written in code-server 4.139's own format (one preamble line: resource URI and
the JSON metadata of the disk state the edit started from; then the editor's text), as found in
``<user-data>/User/Backups/<workspace>/vscode-remote/`` during the continuity runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from provisioning.editor_backups import drop_stale_backups
from provisioning.sync import SyncController
from tests.support.sync_bed import SyncBed

META = {"mtime": 1795905916317, "ctime": 1795905916317, "size": 0, "etag": "3h36fpsso0"}


def _backup(user_data: Path, name: str, resource: str, text: bytes) -> Path:
    path = user_data / "User" / "Backups" / "50dffb89" / "vscode-remote" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(META | {"orphaned": False, "typeId": ""}, separators=(",", ":"))
    path.write_bytes(f"{resource} {meta}\n".encode() + text)
    return path


def _remote(path: Path) -> str:
    return f"vscode-remote://127.0.0.1:8080{quote(str(path))}"


def _layout(workspace: Path, user_data: Path) -> dict[str, Path]:
    workspace.mkdir(parents=True, exist_ok=True)
    junk = user_data / "User" / "Backups" / "50dffb89" / "junk"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"no preamble at all")
    (workspace / "notes.md").write_text("# notes\nsaved on the GPU\n")
    (workspace / "my draft.txt").write_text("saved\n")
    (workspace / "train.py").write_text("EPOCHS = 10\n")
    return {
        # Saved after the backup was taken: the backup's text is the file's text.
        "stale": _backup(
            user_data, "-71ec4856", _remote(workspace / "notes.md"), b"# notes\nsaved on the GPU\n"
        ),
        "stale_quoted": _backup(
            user_data, "-1b2c", _remote(workspace / "my draft.txt"), b"saved\n"
        ),
        # Real unsaved work: different text, a file that no longer exists, an untitled editor.
        "unsaved": _backup(
            user_data, "-5e6f", _remote(workspace / "train.py"), b"EPOCHS = 10\nLR = 3e-4\n"
        ),
        "missing": _backup(user_data, "-7a8b", _remote(workspace / "gone.py"), b"x = 1\n"),
        "untitled": _backup(user_data, "-9c0d", "untitled:Untitled-1", b"scratch\n"),
        "not_a_backup": junk,
    }


def test_only_backups_identical_to_their_file_are_dropped(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    backups = _layout(tmp_path / "workspace", user_data)
    dropped = drop_stale_backups(user_data)
    assert sorted(dropped) == sorted(
        [str(tmp_path / "workspace" / "notes.md"), str(tmp_path / "workspace" / "my draft.txt")]
    )
    kept = {name for name, path in backups.items() if path.exists()}
    assert kept == {"unsaved", "missing", "untitled", "not_a_backup"}


def test_no_backups_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert drop_stale_backups(tmp_path / "never-started") == []


async def test_fence_drops_stale_backups_on_the_standby_over_ssh(sync_bed: SyncBed) -> None:
    bed = sync_bed
    backups = _layout(bed.standby_workspace, bed.standby_user_data)
    report = await SyncController(bed.topology()).fence(drain_timeout=2.0)
    assert report.backups_error == ""
    assert sorted(report.stale_editor_backups) == sorted(
        [str(bed.standby_workspace / "notes.md"), str(bed.standby_workspace / "my draft.txt")]
    )
    assert not backups["stale"].exists()
    assert backups["unsaved"].exists()
    assert backups["untitled"].exists()
