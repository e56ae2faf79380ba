"""Walking a source tree into manifest entries (metadata only; content is read later).

Sockets, FIFOs and devices are skipped (they are not workspace content); so are paths matching an
exclude pattern: a pattern with a "/" matches the relative path, one without matches any name.
The second and later paths of a hard-linked file become "hardlink" entries pointing at the first.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.snapshot.manifest import Entry

__all__ = ["ScanResult", "scan_tree"]


@dataclass(slots=True)
class ScanResult:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def file_bytes(self) -> int:
        return sum(entry.size for entry in self.entries if entry.kind == "file")


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        subject = relative if "/" in pattern else name
        if fnmatch.fnmatchcase(subject, pattern.strip("/")):
            return True
    return False


def _entry(relative: str, info: os.stat_result, **extra: object) -> Entry:
    return Entry(
        path=relative,
        mode=stat.S_IMODE(info.st_mode),
        mtime_ns=info.st_mtime_ns,
        uid=info.st_uid,
        gid=info.st_gid,
        **extra,  # type: ignore[arg-type]
    )


def scan_tree(root: Path, excludes: list[str]) -> ScanResult:
    """Entries in a stable order (sorted names, parents before children)."""
    result = ScanResult()
    first_link_path: dict[tuple[int, int], str] = {}
    pending: list[tuple[bytes, str]] = [(os.fsencode(root), "")]
    while pending:
        directory, relative_dir = pending.pop()
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda child: child.name)
        subdirectories: list[tuple[bytes, str]] = []
        for child in children:
            name = os.fsdecode(child.name)
            relative = f"{relative_dir}{name}"
            if _excluded(relative, name, excludes):
                continue
            info = child.stat(follow_symlinks=False)
            kind = stat.S_IFMT(info.st_mode)
            if kind == stat.S_IFDIR:
                result.entries.append(_entry(relative, info, kind="dir"))
                subdirectories.append((child.path, f"{relative}/"))
            elif kind == stat.S_IFLNK:
                target = os.fsdecode(os.readlink(child.path))
                result.entries.append(_entry(relative, info, kind="symlink", target=target))
            elif kind == stat.S_IFREG:
                key = (info.st_dev, info.st_ino)
                if info.st_nlink > 1 and key in first_link_path:
                    link = _entry(relative, info, kind="hardlink", target=first_link_path[key])
                    result.entries.append(link)
                    continue
                if info.st_nlink > 1:
                    first_link_path[key] = relative
                result.entries.append(
                    _entry(
                        relative,
                        info,
                        kind="file",
                        size=info.st_size,
                        inode=info.st_ino,
                        ctime_ns=info.st_ctime_ns,
                    )
                )
            else:
                result.skipped.append(relative)
        # Depth first, in name order: reversed because pending is a stack.
        pending.extend(reversed(subdirectories))
    return result
