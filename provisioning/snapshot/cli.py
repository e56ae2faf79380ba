"""``dumont-provision snapshot create|list|restore|prune``: the command line over the library.

The main CLI (provisioning/cli.py) calls ``add_subcommand`` and prints a ProvisioningError as one
line on stderr; every handler here returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.errors import UsageError
from provisioning.snapshot.destinations import DestinationOptions, open_destination
from provisioning.snapshot.errors import SnapshotError
from provisioning.snapshot.progress import TransferMeter, format_bytes
from proxy.settings import (
    Schema,
    SettingError,
    boolean,
    count,
    optional_text,
    setting,
    texts,
)

if TYPE_CHECKING:
    from provisioning.snapshot.stores.base import ObjectStore

# The engines are imported by the handler that runs them: a command loads only what it uses.

__all__ = ["SNAPSHOT", "SnapshotSettings", "add_subcommand"]


def _how_many(text: str) -> int:
    """``--keep N``, an operand of one prune rather than a setting."""
    try:
        return count("keep", text)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _level(key: str, raw: Any) -> int:
    value = count(key, raw)
    if value > 19:
        raise SettingError(key, f"zstd level {value} is above 19")
    return value


def _path(key: str, raw: Any) -> Path | None:
    value = optional_text(key, raw)
    return Path(value) if value else None


def _strings(key: str, raw: Any) -> list[str]:
    return list(texts(key, raw))


@dataclass(frozen=True)
class SnapshotSettings:
    """What the snapshot verbs read from their flags, then ``DUMONT_SNAPSHOT_<KEY>``."""

    destination: str | None = setting(
        None,
        help="a directory, ssh://[user@]host[:port]/path or gs://bucket/prefix",
        parse=optional_text,
        short="-d",
        metavar="DESTINATION",
    )
    ssh_config: Path | None = setting(
        None, help="ssh_config file for ssh:// destinations", parse=_path, metavar="FILE"
    )
    progress: bool | None = setting(
        None,
        help="print bytes, files, rate and ETA every second",
        parse=boolean,
        takes="toggle",
        shown_default="when stderr is a terminal",
    )
    threads: int | None = setting(
        None,
        help="parallel readers/writers",
        parse=count,
        metavar="N",
        shown_default="the CPU count, at least 2",
    )
    level: int = setting(1, help="zstd level, 1-19", parse=_level, metavar="N")
    exclude: list[str] = setting(
        help="skip matching paths (a name glob, or a path glob if it has a /)",
        parse=_strings,
        takes="many",
        metavar="PATTERN",
        default_factory=list,
    )


def _error(key: str, problem: str) -> UsageError:
    return UsageError(f"{key.replace('_', '-')}: {problem}")


SNAPSHOT: Schema[SnapshotSettings] = Schema(
    SnapshotSettings, env_prefix="DUMONT_SNAPSHOT_", error=_error
)


def _settings(args: argparse.Namespace) -> SnapshotSettings:
    return SNAPSHOT.load(args, os.environ, only_taken=True)


def _open(settings: SnapshotSettings) -> ObjectStore:
    if not settings.destination:
        env = SNAPSHOT.entry("destination").env
        raise SnapshotError(f"no destination: pass --destination or set {env}")
    return open_destination(
        settings.destination, DestinationOptions(ssh_config=settings.ssh_config)
    )


def _progress(settings: SnapshotSettings, label: str) -> TransferMeter | None:
    wanted = settings.progress if settings.progress is not None else sys.stderr.isatty()
    return TransferMeter(label, sys.stderr) if wanted else None


def _create(args: argparse.Namespace) -> int:
    from provisioning.snapshot.create import CreateOptions, create_snapshot

    settings = _settings(args)
    options = CreateOptions(
        excludes=tuple(settings.exclude),
        level=settings.level,
        threads=settings.threads or CreateOptions().threads,
        parent=args.parent,
        rehash=args.rehash,
        progress=_progress(settings, "snapshot create"),
    )
    store = _open(settings)
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

    store = _open(_settings(args))
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

    settings = _settings(args)
    store = _open(settings)
    try:
        result = restore_snapshot(
            store,
            args.snapshot,
            Path(args.target),
            source=args.source,
            threads=settings.threads,
            overwrite=args.overwrite,
            progress=_progress(settings, "snapshot restore"),
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

    store = _open(_settings(args))
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


# The repository every verb opens, and how the verbs that move bytes run.
_WHERE = ("destination", "ssh_config")
_HOW = ("progress", "threads")


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snapshot = subparsers.add_parser(
        "snapshot", help="workspace snapshots: create, list, restore, prune"
    )
    actions = snapshot.add_subparsers(dest="snapshot_action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="snapshot a directory tree")
    create.add_argument("source", help="the directory to snapshot")
    SNAPSHOT.add_flags(create, (*_WHERE, *_HOW, "exclude", "level"))
    create.add_argument("--parent", help="snapshot whose unchanged files need not be read")
    create.add_argument("--rehash", action="store_true", help="read every file, trust no metadata")
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="list snapshots, oldest first")
    SNAPSHOT.add_flags(listing, _WHERE)
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    listing.set_defaults(handler=_list)

    restore = actions.add_parser("restore", help="restore a snapshot into a directory")
    restore.add_argument("snapshot", help='a snapshot id, unique id prefix, or "latest"')
    restore.add_argument("target", help="directory to restore into (missing or empty)")
    SNAPSHOT.add_flags(restore, (*_WHERE, *_HOW))
    restore.add_argument("--source", help='with "latest": the newest snapshot of this source path')
    restore.add_argument(
        "--overwrite",
        action="store_true",
        help="restore into a non-empty directory, replacing colliding paths",
    )
    restore.set_defaults(handler=_restore)

    prune = actions.add_parser("prune", help="keep the N latest snapshots, free everything else")
    SNAPSHOT.add_flags(prune, _WHERE)
    prune.add_argument("--keep", type=_how_many, required=True, help="how many snapshots to keep")
    prune.set_defaults(handler=_prune)
