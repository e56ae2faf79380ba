"""Reverse sync before failback: the standby's files go to the primary, verified, before the switch.

Run by the proxy's ``before_failback`` hook (``dumont-provision sync reverse``); a non-zero exit
abandons the failback, so the user stays on the standby rather than on a primary missing files.

1. Fence the standby (idempotent) and stop lsyncd on the primary: nothing may flow forward now.
2. On the primary, pull every root from the standby with rsync through the sync key. The standby's
   gate is in read-only mode while fenced, which is exactly what a pull needs. ``--delete`` makes
   the primary a mirror; whatever it had that the standby lacks or changed is moved aside into a
   backup dir (the last writes before the crash that never reached the standby), never thrown away.
   A pass that fails only on files the live standby rewrote mid-read (rsync 23/24) is run again.
3. Verify: every file the standby held before the copy started is on the primary, byte for byte
   (a checksum dry run, without --delete). The standby stays live during all this (the user keeps
   working on it until the proxy switches home, and code-server rewrites its own state every few
   seconds), so files changed after the copy started belong to the window the switch closes; and
   files only the primary has are not the standby's data. Demanding no difference at all failed
   every failback from a live standby (found by the continuity run, issue 6).
4. Lift the fence and restart forward sync; wait until its startup pass finished.
"""

from __future__ import annotations

import calendar
import math
import re
import shlex
import time
from dataclasses import dataclass
from functools import partial

from provisioning.errors import RemoteCommandError, ReverseSyncError
from provisioning.fence import fence_standby, unfence_standby
from provisioning.lsyncd_config import SyncRoot
from provisioning.progress import Progress, quiet
from provisioning.ssh import run_remote
from provisioning.sync import SyncController, for_each_root

__all__ = [
    "PULL_PASSES",
    "RETRIED_RSYNC_CODES",
    "ReverseReport",
    "first_rsync_complaint",
    "pass_backup_dir",
    "pull_root",
    "reverse_sync",
    "rsync_transferred",
    "unchanged_since",
]


def unchanged_since(dry_run: str, since: float) -> list[str]:
    """Files rsync would still send whose sender-side mtime is older than ``since``: real losses.

    Directories (a trailing slash) only carry metadata; rsync prints %M as YYYY/MM/DD-HH:MM:SS in
    the receiving side's time zone, which the caller pins to UTC.
    """
    lost: list[str] = []
    for line in dry_run.splitlines():
        stamp, _, name = line.strip().partition(" ")
        if not name or name.endswith("/"):
            continue
        try:
            mtime = calendar.timegm(time.strptime(stamp, "%Y/%m/%d-%H:%M:%S"))
        except ValueError:
            lost.append(line.strip())  # not a line we understand: never pass it silently
            continue
        # Whole seconds: a file written in the second the copy started counts as changed after.
        if mtime < math.floor(since):
            lost.append(name)
    return lost


_STATS = {
    "files": re.compile(r"^Number of regular files transferred: ([\d,]+)", re.M),
    "bytes": re.compile(r"^Total transferred file size: ([\d,]+)", re.M),
}


def rsync_transferred(stats: str) -> tuple[int, int]:
    """Files and bytes rsync's ``--stats`` says it sent (0 for a line it did not print)."""
    found = {k: pattern.search(stats) for k, pattern in _STATS.items()}
    files, size = (int(m.group(1).replace(",", "")) if m else 0 for m in found.values())
    return files, size


def first_rsync_complaint(stderr: str) -> str:
    """rsync's summary line says "see previous errors": the first of those names the file."""
    for line in stderr.splitlines():
        text = line.strip()
        complaint = text.startswith(("rsync:", "file has vanished", "cannot delete"))
        if complaint and "(code " not in text:
            return text[:300]
    return ""


@dataclass(frozen=True)
class ReverseReport:
    backup_dir: str
    seconds: float
    roots: int
    files_copied: int = 0
    bytes_copied: int = 0  # what the standby had to send: small when a snapshot filled the GPU


def _pull_command(
    controller: SyncController, root: SyncRoot, *, extra: list[str], delete: bool = True
) -> str:
    t = controller.topology
    source = f"{t.sync_target.destination}:{root.standby_path.rstrip('/')}/"
    argv = ["rsync", "-a", *(["--delete"] if delete else []), *extra, "-e", t.shared_rsh()]
    argv += [f"--exclude={e}" for e in (*root.excludes, *t.settings.extra_excludes)]
    argv += [source, f"{root.gpu_path.rstrip('/')}/"]
    return shlex.join(argv)


# rsync's "partial transfer" (23) and "source files vanished" (24): on a live standby these are
# files code-server rewrote or removed while rsync read them ("No data available" mapping a
# state.json replaced mid-read). Another pass copies them; a lasting fault (a file nobody may read)
# fails every pass and is reported as before.
RETRIED_RSYNC_CODES = frozenset({23, 24})
PULL_PASSES = 3


def pass_backup_dir(backup_root: str, root: SyncRoot, attempt: int) -> str:
    """Each pass backs up into its own dir: a second pass replacing a file the first pass wrote
    must not overwrite the primary's own version the first pass moved aside."""
    suffix = "" if attempt == 1 else f".pass{attempt}"
    return f"{backup_root}/{root.name}{suffix}"


async def pull_root(
    controller: SyncController, root: SyncRoot, *, backup_root: str, timeout: float
) -> tuple[int, int]:
    """Copy one root from the standby; the primary's replaced files go to the backup dir."""
    for attempt in range(1, PULL_PASSES + 1):
        backup = ["--backup", f"--backup-dir={pass_backup_dir(backup_root, root, attempt)}"]
        pull = _pull_command(controller, root, extra=[*backup, "--stats"])
        script = f"mkdir -p {shlex.quote(root.gpu_path)} && {pull}"
        try:
            stats = await run_remote(controller.topology.gpu, script, timeout=timeout)
        except RemoteCommandError as exc:
            if exc.returncode in RETRIED_RSYNC_CODES and attempt < PULL_PASSES:
                continue
            why = first_rsync_complaint(exc.stderr)
            raise ReverseSyncError(
                f"reverse sync of {root.name} failed on pass {attempt}: {exc}"
                + (f" (first: {why})" if why else "")
            ) from exc
        return rsync_transferred(stats)
    raise AssertionError("unreachable: the last pass returns or raises")


async def _verify(
    controller: SyncController, root: SyncRoot, *, since: float, timeout: float
) -> list[str]:
    """The standby's files still missing or different on the primary (changed before ``since``)."""
    # One line per file that would still be sent: the standby file's mtime, then its name.
    verify = ["--checksum", "--dry-run", "--out-format=%M %n"]
    command = "TZ=UTC " + _pull_command(controller, root, extra=verify, delete=False)
    try:
        differences = await run_remote(controller.topology.gpu, command, timeout=timeout)
    except RemoteCommandError as exc:
        raise ReverseSyncError(f"verifying {root.name} failed: {exc}") from exc
    return unchanged_since(differences, since)


async def reverse_sync(
    controller: SyncController,
    *,
    progress: Progress = quiet,
    first_sync_timeout: float = 3600.0,
    drain_timeout: float = 10.0,
    fencing_token: int | None = None,
) -> ReverseReport:
    """Steps 1-4 above. With ``fencing_token``, step 1's fence refuses a token older than the
    standby's record before anything moves, and step 4 lifts the fence only if no newer token
    arrived meanwhile: a newer leader that fenced during the copy keeps its fence."""
    t = controller.topology
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup_root = f"{t.settings.state_dir}/reverse-backups/{stamp}"
    progress("fencing the standby and stopping forward sync")
    await fence_standby(
        t.standby, t.standby_state_dir, drain_timeout=drain_timeout, fencing_token=fencing_token
    )
    try:
        await controller.stop()
    except RemoteCommandError as exc:
        raise ReverseSyncError(f"cannot stop lsyncd on the primary: {exc}") from exc
    # The standby's own clock: what it changes after this moment is not held against the copy.
    copy_started = float(await run_remote(t.standby, "date +%s.%N"))
    copies = await for_each_root(
        t.roots, partial(pull_root, controller, backup_root=backup_root, timeout=first_sync_timeout)
    )
    for root, (files, size) in zip(t.roots, copies, strict=True):
        progress(f"{root.name}: {files} files, {size} bytes copied")
    progress("verifying the primary byte for byte")
    verdicts = await for_each_root(
        t.roots, partial(_verify, controller, since=copy_started, timeout=first_sync_timeout)
    )
    for root, missing in zip(t.roots, verdicts, strict=True):
        if missing:
            shown = ", ".join(missing[:5])
            raise ReverseSyncError(
                f"{root.name} differs after reverse sync in {len(missing)} entries: {shown}"
            )
    files_copied = sum(files for files, _ in copies)
    bytes_copied = sum(size for _, size in copies)
    progress("lifting the fence and restarting forward sync")
    await unfence_standby(
        t.standby,
        t.standby_state_dir,
        fencing_token=fencing_token,
        refused="the standby stays fenced and forward sync stays stopped",
    )
    await controller.start()
    await controller.wait_first_sync(timeout=first_sync_timeout)
    return ReverseReport(
        backup_root, time.monotonic() - started, len(t.roots), files_copied, bytes_copied
    )
