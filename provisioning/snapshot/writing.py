"""Writing restored files with as few system calls as the kernel allows.

A file of one blob (nearly every source file) is written whole: created with its final permission
bits, written, given its owner only when that differs from what the kernel gave it, its mode only
when the umask took bits off, and its mtime through the open descriptor; then closed. Four system
calls in the common case, where setting metadata by path afterwards took nine and looked each path
up four times. Bigger files are written chunk by chunk with pwrite and get their metadata at the
end, as directories do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from provisioning.snapshot.manifest import Entry

__all__ = ["Ownership", "current_umask", "is_zero", "write_at", "write_whole_file"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
_PERMISSIONS = 0o777


def is_zero(data: bytes | memoryview) -> bool:
    # The end bytes first: real data almost never has both zero, so count() rarely runs.
    return bool(data) and data[0] == 0 and data[-1] == 0 and bytes(data).count(0) == len(data)


def current_umask() -> int | None:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True, slots=True)
class Ownership:
    """What a file this process creates gets by itself, so restore changes only what differs.

    ``gid`` None means "not known" (restoring over an existing tree, whose directories may hand
    down another group): then root chowns every path, as before. ``umask`` None: chmod always.
    """

    as_root: bool
    uid: int
    gid: int | None
    umask: int | None

    @classmethod
    def probe(cls, directory: bytes, trust_new_files: bool) -> Ownership:
        """Creates and removes one file in ``directory`` to see which group new files get
        (a set-group-ID directory or a ``grpid`` mount hands down the directory's group)."""
        umask = current_umask()
        if os.geteuid() != 0:
            return cls(False, os.geteuid(), None, umask)
        if not trust_new_files:
            return cls(True, 0, None, umask)
        probe = os.path.join(directory, f".dumont-owner-probe-{os.urandom(4).hex()}".encode())
        descriptor = os.open(probe, _CREATE | os.O_EXCL, 0o600)
        try:
            info = os.fstat(descriptor)
        finally:
            os.close(descriptor)
            os.unlink(probe)
        return cls(True, info.st_uid, info.st_gid, umask)

    def needs_chown(self, entry: Entry) -> bool:
        return self.as_root and (self.gid is None or (entry.uid, entry.gid) != (self.uid, self.gid))

    def needs_chmod(self, mode: int) -> bool:
        """True unless creating with ``mode``'s permission bits under the umask gives ``mode``."""
        return self.umask is None or mode & _PERMISSIONS & ~self.umask != mode


def _write_all(descriptor: int, data: bytes) -> None:
    written = os.write(descriptor, data)
    if written == len(data):  # a regular file takes it all in one call but for a signal
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(descriptor, view) :]


def write_whole_file(path: bytes, content: bytes, entry: Entry, ownership: Ownership) -> None:
    """Create ``path`` holding ``content`` with ``entry``'s mode, owner and mtime.

    An all-zero file is only extended (a hole), as restore does for all-zero chunks.
    """
    descriptor = os.open(path, _CREATE, entry.mode & _PERMISSIONS)
    try:
        if is_zero(content):
            os.ftruncate(descriptor, len(content))
        elif content:
            _write_all(descriptor, content)
        # chown before chmod: a chown may clear set-user-ID and set-group-ID bits.
        if ownership.needs_chown(entry):
            os.fchown(descriptor, entry.uid, entry.gid)
        if ownership.needs_chmod(entry.mode):
            os.fchmod(descriptor, entry.mode)
        os.utime(descriptor, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        os.close(descriptor)


def write_at(path: bytes, content: bytes | memoryview, offset: int) -> None:
    """One chunk of a bigger file, created beforehand at its full size."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    view = memoryview(content)
    try:
        while view:
            written = os.pwrite(descriptor, view, offset)
            view, offset = view[written:], offset + written
    finally:
        os.close(descriptor)
