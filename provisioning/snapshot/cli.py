"""``dumont-provision snapshot create|list|restore|prune``: the command line over the library.

The main CLI (provisioning/cli.py) calls ``add_subcommand`` and prints a ProvisioningError as one
line on stderr; every handler here returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from provisioning.snapshot.destinations import DestinationOptions, open_destination
from provisioning.snapshot.errors import SnapshotError
from provisioning.snapshot.progress import TransferMeter, format_bytes

if TYPE_CHECKING:
    from provisioning.snapshot.stores.base import ObjectStore

# The engines are imported by the handler that runs them: a command loads only what it uses.

__all__ = ["add_subcommand"]

_DESTINATION_ENV = "DUMONT_SNAPSHOT_DESTINATION"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _level(text: str) -> int:
    value = _positive(text)
    if value > 19:
        raise argparse.ArgumentTypeError(f"zstd level {value} is above 19")
    return value


def _open(args: argparse.Namespace) -> ObjectStore:
    if not args.destination:
        raise SnapshotError(f"no destination: pass --destination or set {_DESTINATION_ENV}")
    return open_destination(args.destination, DestinationOptions(ssh_config=args.ssh_config))


def _progress(args: argparse.Namespace, label: str) -> TransferMeter | None:
    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    return TransferMeter(label, sys.stderr) if wanted else None


def _create(args: argparse.Namespace) -> int:
    from provisioning.snapshot.create import CreateOptions, create_snapshot

    options = CreateOptions(
        excludes=tuple(args.exclude),
        level=args.level,
        threads=args.threads or CreateOptions().threads,
        parent=args.parent,
        rehash=args.rehash,
        progress=_progress(args, "snapshot create"),
    )
    store = _open(args)
    try:
        result = create_snapshot(Path(args.source), store, options)
    finally:
        store.close()
    record = result.snapshot
    for warning in record.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rate = result.read_bytes / result.seconds if result.seconds > 0 else 0.0
    print(
        f"snapshot {record.id}: {record.files} files, {format_bytes(record.size)}; "
        f"read {format_bytes(result.read_bytes)}, stored {format_bytes(result.stored_bytes)} new, "
        f"{result.reused_files} files unchanged, {result.seconds:.2f} s ({format_bytes(rate)}/s)"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from provisioning.snapshot.repository import Repository

    store = _open(args)
    try:
        records = Repository.open(store, create=False).snapshots()
    finally:
        store.close()
    if args.json:
        print(json.dumps([asdict(record) for record in records], indent=1))
        return 0
    print(f"{'ID':<26} {'TIME (UTC)':<20} {'FILES':>7} {'SIZE':>10} {'ADDED':>10}  SOURCE")
    for record in records:
        print(
            f"{record.id:<26} {record.time[:19].replace('T', ' '):<20} {record.files:>7} "
            f"{format_bytes(record.size):>10} {format_bytes(record.added_bytes):>10}  "
            f"{record.source}"
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from provisioning.snapshot.restore import restore_snapshot

    store = _open(args)
    try:
        result = restore_snapshot(
            store,
            args.snapshot,
            Path(args.target),
            source=args.source,
            threads=args.threads,
            overwrite=args.overwrite,
            progress=_progress(args, "snapshot restore"),
        )
    finally:
        store.close()
    print(
        f"restored {result.snapshot.id} into {args.target}: {result.files} files, "
        f"{format_bytes(result.bytes)}, all hashes verified, {result.seconds:.2f} s"
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from provisioning.snapshot.prune import prune_snapshots

    store = _open(args)
    try:
        result = prune_snapshots(store, args.keep)
    finally:
        store.close()
    print(
        f"kept {len(result.kept)} snapshot(s), removed {len(result.removed)}; deleted "
        f"{result.deleted_packs} pack(s), repacked {result.repacked_packs}, freed "
        f"{format_bytes(result.freed_bytes)}"
    )
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--destination",
        default=os.environ.get(_DESTINATION_ENV),
        help=f"a directory, ssh://[user@]host[:port]/path or gs://bucket/prefix "
        f"(default: ${_DESTINATION_ENV})",
    )
    parser.add_argument("--ssh-config", type=Path, help="ssh_config file for ssh:// destinations")


def _with_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print bytes, files, rate and ETA every second (default: when stderr is a terminal)",
    )
    parser.add_argument("--threads", type=_positive, help="parallel readers/writers")


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snapshot = subparsers.add_parser(
        "snapshot", help="workspace snapshots: create, list, restore, prune"
    )
    actions = snapshot.add_subparsers(dest="snapshot_action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="snapshot a directory tree")
    create.add_argument("source", help="the directory to snapshot")
    _common(create)
    _with_progress(create)
    create.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip matching paths (a name glob, or a path glob if it has a /)",
    )
    create.add_argument("--level", type=_level, default=1, help="zstd level, 1-19 (default 1)")
    create.add_argument("--parent", help="snapshot whose unchanged files need not be read")
    create.add_argument("--rehash", action="store_true", help="read every file, trust no metadata")
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="list snapshots, oldest first")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    listing.set_defaults(handler=_list)

    restore = actions.add_parser("restore", help="restore a snapshot into a directory")
    restore.add_argument("snapshot", help='a snapshot id, unique id prefix, or "latest"')
    restore.add_argument("target", help="directory to restore into (missing or empty)")
    _common(restore)
    _with_progress(restore)
    restore.add_argument("--source", help='with "latest": the newest snapshot of this source path')
    restore.add_argument(
        "--overwrite",
        action="store_true",
        help="restore into a non-empty directory, replacing colliding paths",
    )
    restore.set_defaults(handler=_restore)

    prune = actions.add_parser("prune", help="keep the N latest snapshots, free everything else")
    _common(prune)
    prune.add_argument("--keep", type=_positive, required=True, help="how many snapshots to keep")
    prune.set_defaults(handler=_prune)
