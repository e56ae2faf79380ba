"""Errors of workspace snapshots, each printed by the CLI as one line.

ProvisioningError
└── SnapshotError                 root of everything in provisioning.snapshot
    ├── SourceMissingError        the tree to snapshot does not exist or is not a directory
    ├── DestinationError          a destination cannot be parsed, reached, read or written
    │   └── UploadError           an object upload failed after its retries
    ├── UnknownSnapshotError      no snapshot with that id (or no snapshot at all for "latest")
    ├── RestoreTargetError        the restore target cannot be written
    │   └── TargetNotEmptyError   restore would mix the snapshot into an existing tree
    └── CorruptSnapshotError      hashes do not match: names the files affected
"""

from __future__ import annotations

from provisioning.errors import ProvisioningError

__all__ = [
    "CorruptSnapshotError",
    "DestinationError",
    "RestoreTargetError",
    "SnapshotError",
    "SourceMissingError",
    "TargetNotEmptyError",
    "UnknownSnapshotError",
    "UploadError",
]

_MAX_NAMED_FILES = 5


class SnapshotError(ProvisioningError):
    """Root of every error the snapshot subpackage raises on purpose."""


class SourceMissingError(SnapshotError):
    """The directory to snapshot is missing or not a directory."""


class DestinationError(SnapshotError):
    """A destination is malformed, unreachable, unreadable or unwritable."""


class UploadError(DestinationError):
    """An upload did not complete after its retries (the message never holds a session URI)."""


class UnknownSnapshotError(SnapshotError):
    """The snapshot asked for does not exist in the repository."""


class RestoreTargetError(SnapshotError):
    """The directory to restore into cannot be created or written."""


class TargetNotEmptyError(RestoreTargetError):
    """The restore target already holds files and overwriting was not asked for."""


class CorruptSnapshotError(SnapshotError):
    """Stored data does not match its hash; ``files`` lists every file it affects."""

    def __init__(self, what: str, files: list[str]) -> None:
        self.files = sorted(files)
        if not self.files:
            super().__init__(what)
            return
        named = ", ".join(self.files[:_MAX_NAMED_FILES])
        more = len(self.files) - _MAX_NAMED_FILES
        suffix = f" and {more} more" if more > 0 else ""
        super().__init__(f"{what}: {len(self.files)} file(s) affected: {named}{suffix}")
