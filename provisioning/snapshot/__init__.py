"""Workspace snapshots: save a GPU machine's work fast, restore it onto any new machine.

The library behind ``dumont-provision snapshot create|list|restore|prune``; see docs/SNAPSHOTS.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioning.snapshot.create import CreateOptions, CreateResult, create_snapshot
    from provisioning.snapshot.destinations import DestinationOptions, open_destination
    from provisioning.snapshot.manifest import SnapshotRecord
    from provisioning.snapshot.progress import TransferMeter
    from provisioning.snapshot.prune import PruneResult, prune_snapshots
    from provisioning.snapshot.repository import Repository
    from provisioning.snapshot.restore import RestoreResult, restore_snapshot

__all__ = [
    "CreateOptions",
    "CreateResult",
    "DestinationOptions",
    "PruneResult",
    "Repository",
    "RestoreResult",
    "SnapshotRecord",
    "TransferMeter",
    "create_snapshot",
    "list_snapshots",
    "open_destination",
    "prune_snapshots",
    "restore_latest",
    "restore_snapshot",
]

# Imported on first use: `snapshot create` need not load the restorer or the pruner, nor
# `restore` the chunker (start-up is part of every command's wall time).
_LAZY = {
    "CreateOptions": "create",
    "CreateResult": "create",
    "create_snapshot": "create",
    "DestinationOptions": "destinations",
    "open_destination": "destinations",
    "SnapshotRecord": "manifest",
    "TransferMeter": "progress",
    "PruneResult": "prune",
    "Repository": "repository",
    "prune_snapshots": "prune",
    "RestoreResult": "restore",
    "restore_snapshot": "restore",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def list_snapshots(
    destination: str, options: DestinationOptions | None = None
) -> list[SnapshotRecord]:
    from provisioning.snapshot.destinations import open_destination
    from provisioning.snapshot.repository import Repository

    store = open_destination(destination, options)
    try:
        return Repository.open(store, create=False).snapshots()
    finally:
        store.close()


def restore_latest(
    destination: str,
    target_dir: Path,
    *,
    source: str | None = None,
    overwrite: bool = False,
    options: DestinationOptions | None = None,
    progress: TransferMeter | None = None,
) -> RestoreResult:
    """Fill ``target_dir`` from the newest snapshot (of ``source``, when given) at ``destination``.

    Meant for a replacement GPU: restore this first, then reverse-sync from the standby only what
    changed after ``result.snapshot.time``. Raises UnknownSnapshotError when there is none.
    """
    from provisioning.snapshot.destinations import open_destination
    from provisioning.snapshot.restore import restore_snapshot

    store = open_destination(destination, options)
    try:
        return restore_snapshot(
            store, "latest", target_dir, source=source, overwrite=overwrite, progress=progress
        )
    finally:
        store.close()
