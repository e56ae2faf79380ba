"""Dropping code-server's stale hot-exit backups on the standby when it takes over.

code-server (VS Code) keeps a backup of every unsaved editor under
``<user-data>/User/Backups/<workspace>/<scheme>/<hash>``: one line naming the file and the disk
state the edit started from (``<uri> {"mtime":..,"size":..,"etag":..}``), then the editor's text.
lsyncd carries these to the standby, which is how unsaved work can survive the GPU.

A backup can also arrive stale: the user saved, the GPU dropped the backup, and the GPU died before
the deletion reached the standby. The standby's IDE then restores the editor from it with the old
``mtime`` and refuses the user's next save ("the content of the file is newer"), a conflict with
nothing behind it (found by the continuity run on a quiet machine, issue 6). A backup whose text
is exactly the file on the standby's disk holds no unsaved work, so the fence removes it; every
other backup (real unsaved edits, untitled editors, anything not understood) is kept.

This file is also the script: ``python3 - USER_DATA_DIR < editor_backups.py`` on the standby, which
needs only the Python 3 that rrsync already requires.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["drop_stale_backups", "stale_backup_target"]

_FILE_SCHEMES = ("vscode-remote", "file")
_MAX_BACKUP = 64 << 20  # a bigger backup is kept rather than compared


def stale_backup_target(backup: Path) -> Path | None:
    """The file ``backup`` duplicates exactly (None: it holds unsaved work or is not understood)."""
    try:
        if backup.stat().st_size > _MAX_BACKUP:
            return None
        data = backup.read_bytes()
    except OSError:
        return None
    preamble, newline, text = data.partition(b"\n")
    resource, _space, meta = preamble.decode("utf-8", "replace").partition(" ")
    if not newline or not meta.startswith("{"):
        return None
    try:
        json.loads(meta)
    except ValueError:
        return None
    parts = urlsplit(resource)
    if parts.scheme not in _FILE_SCHEMES or not parts.path.startswith("/"):
        return None  # untitled editors, notebooks, anything else: never stale by this rule
    target = Path(unquote(parts.path))
    try:
        if not target.is_file() or target.stat().st_size != len(text):
            return None
        return target if target.read_bytes() == text else None
    except OSError:
        return None


def drop_stale_backups(user_data: Path) -> list[str]:
    """Remove backups identical to the file they back up; returns the files they were for."""
    dropped = []
    root = user_data / "User" / "Backups"
    for directory, _dirs, files in os.walk(root):
        for name in files:
            backup = Path(directory, name)
            target = stale_backup_target(backup)
            if target is not None:
                try:
                    backup.unlink()
                except OSError:
                    continue
                dropped.append(str(target))
    return dropped


def main(argv: list[str]) -> int:
    for user_data in argv:
        for path in drop_stale_backups(Path(user_data)):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
