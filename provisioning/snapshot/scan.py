"""Walking a source tree into manifest entries (metadata only; content is read later).

Sockets, FIFOs and devices are skipped (they are not workspace content); so are paths matching an
exclude pattern: a pattern with a "/" matches the relative path, one without matches any name.
The second and later paths of a hard-linked file become "hardlink" entries pointing at the first.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_IMODE

from provisioning.snapshot.manifest import Entry

__all__ = ["ScanResult", "scan_tree", "walk_tree"]


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


def walk_tree(
    root: Path, excludes: list[str], skipped: list[str]
) -> Iterator[list[tuple[Entry, bytes]]]:
    """Each directory's entries with their absolute paths, as soon as the directory is listed.

    In a stable order (sorted names, parents before children), so that reading can start while
    the rest of the tree is still being listed. Skipped paths are appended to ``skipped``.
    """
    first_link_path: dict[tuple[int, int], str] = {}
    pending: list[tuple[bytes, str]] = [(os.fsencode(root), "")]
    fsdecode = os.fsdecode
    while pending:
        directory, relative_dir = pending.pop()
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda child: child.name)
        found: list[tuple[Entry, bytes]] = []
        subdirectories: list[tuple[bytes, str]] = []
        for child in children:
            name = fsdecode(child.name)
            relative = f"{relative_dir}{name}"
            if excludes and _excluded(relative, name, excludes):
                continue
            info = child.stat(follow_symlinks=False)
            mode = info.st_mode
            kind = S_IFMT(mode)
            if kind == S_IFREG:
                if info.st_nlink > 1:
                    key = (info.st_dev, info.st_ino)
                    first = first_link_path.get(key)
                    if first is not None:
                        link = Entry(
                            relative,
                            "hardlink",
                            S_IMODE(mode),
                            info.st_mtime_ns,
                            info.st_uid,
                            info.st_gid,
                            target=first,
                        )
                        found.append((link, child.path))
                        continue
                    first_link_path[key] = relative
                entry = Entry(
                    relative,
                    "file",
                    S_IMODE(mode),
                    info.st_mtime_ns,
                    info.st_uid,
                    info.st_gid,
                    info.st_size,
                    inode=info.st_ino,
                    ctime_ns=info.st_ctime_ns,
                )
                found.append((entry, child.path))
            elif kind == S_IFDIR:
                entry = Entry(
                    relative, "dir", S_IMODE(mode), info.st_mtime_ns, info.st_uid, info.st_gid
                )
                found.append((entry, child.path))
                subdirectories.append((child.path, f"{relative}/"))
            elif kind == S_IFLNK:
                target = fsdecode(os.readlink(child.path))
                entry = Entry(
                    relative,
                    "symlink",
                    S_IMODE(mode),
                    info.st_mtime_ns,
                    info.st_uid,
                    info.st_gid,
                    target=target,
                )
                found.append((entry, child.path))
            else:
                skipped.append(relative)
        # Depth first, in name order: reversed because pending is a stack.
        pending.extend(reversed(subdirectories))
        if found:
            yield found


def scan_tree(root: Path, excludes: list[str]) -> ScanResult:
    """Entries in a stable order (sorted names, parents before children)."""
    result = ScanResult()
    for found in walk_tree(root, excludes, result.skipped):
        result.entries.extend(entry for entry, _path in found)
    return result
