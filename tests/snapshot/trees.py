"""Generated source trees and an exact tree comparison, shared by the snapshot tests."""

from __future__ import annotations

import os
import random
import socket
import stat
from pathlib import Path

__all__ = ["describe_tree", "make_rich_tree", "write_random"]

NON_UTF8_NAME = b"caf\xe9-latin1.txt"  # not valid UTF-8: must survive byte for byte


def write_random(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def make_rich_tree(root: Path) -> None:
    """Every kind of thing a workspace holds, including the awkward ones."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "src" / "pkg").mkdir(parents=True)
    for number in range(40):
        text = f"def f{number}():\n    return {number}\n" * (number + 1)
        (root / "src" / "pkg" / f"mod_{number}.py").write_text(text)
    write_random(root / "models" / "weights.bin", 3 * 1024 * 1024 + 17, seed=1)
    log = "".join(f"step {i} loss {i * 0.001:.4f}\n" for i in range(120_000))
    (root / "logs" / "train.log").parent.mkdir()
    (root / "logs" / "train.log").write_text(log)
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    (root / "empty-file").write_bytes(b"")
    (root / "ünïcødé ファイル 🚀.txt").write_text("unicode name\n")
    (root / os.fsdecode(NON_UTF8_NAME)).write_bytes(b"latin-1 name\n")
    (root / "link-to-module").symlink_to("src/pkg/mod_1.py")
    (root / "dangling-link").symlink_to("does/not/exist")
    (root / "dir-link").symlink_to("src")
    os.link(root / "src" / "pkg" / "mod_2.py", root / "hard-link-to-mod2.py")
    sparse = root / "sparse.img"
    with sparse.open("wb") as out:
        out.seek(40 * 1024 * 1024)
        out.write(b"data in the middle of a hole")
        out.truncate(64 * 1024 * 1024)
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "script.sh").chmod(0o755)
    (root / "secret.key").write_text("not really\n")
    (root / "secret.key").chmod(0o600)
    (root / "readonly-dir").mkdir()
    (root / "readonly-dir" / "inside.txt").write_text("inside a read-only directory\n")
    (root / "readonly-dir").chmod(0o555)
    os.mkfifo(root / "a-fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.fsencode(root / "a-socket"))
    listener.close()
    # Distinct, old mtimes so that a restore which forgets them is caught.
    for number, path in enumerate(sorted(root.rglob("*"))):
        os.utime(
            path, ns=(1_600_000_000_000_000_000 + number * 1_000_003,) * 2, follow_symlinks=False
        )
    os.utime(root, ns=(1_600_000_000_000_000_000,) * 2)


def describe_tree(root: Path, skip_special: bool = True) -> dict[bytes, tuple[object, ...]]:
    """Everything restore must reproduce: type, mode, mtime, content, link target, hard links."""
    described: dict[bytes, tuple[object, ...]] = {}
    inode_to_first: dict[int, bytes] = {}
    base = os.fsencode(root)
    for directory, subdirectories, files in os.walk(base):
        subdirectories.sort()
        for name in sorted(subdirectories + files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, base)
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            if kind in (stat.S_IFSOCK, stat.S_IFIFO) and skip_special:
                continue
            common = (kind, stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            if kind == stat.S_IFLNK:
                described[relative] = (*common[:1], os.readlink(path))
            elif kind == stat.S_IFREG:
                with open(path, "rb") as source:
                    content = source.read()
                first = inode_to_first.setdefault(info.st_ino, relative)
                described[relative] = (*common, content, first)
            else:
                described[relative] = common
    return described
