"""The planned switchover's flush (issue 18): everything the GPU holds is on the standby, verified
file by file, before the proxy moves the user and long before anyone touches the GPU.

1. Stop lsyncd on the GPU. Its pending events only name files that changed; the pass below compares
   every file, so nothing they named is lost, and no lsyncd rsync races the pass.
2. One final rsync pass per root, GPU -> standby, through the sync key and the (open) gate, as
   lsyncd would push it, but with the GPU as the authority: no ``--update``, so a standby copy
   with a newer mtime (the standby's own code-server touching user data) is replaced by what the
   user had.
   No ``--delete`` either: a file deleted on the GPU while lsyncd was down stays on the standby
   (resurrected, never lost). rsync's "some files could not be transferred" (23, 24) is not final:
   the verify decides.
3. Verify, the reverse sync's rule pointed the other way: a checksum dry run lists every file
   that still differs; one whose GPU mtime is older than the pass's start is a loss and refuses
   the flush.
   Files changed on the GPU *during* the pass (the user is still working there) get another pass,
   up to ``passes`` times, so the window for a save that misses the standby is the last pass only.

On any failure forward sync is restarted before the error goes up: the GPU keeps running, the user
stays where they are, and the error is one line. The caller fences next (``SyncController.fence``).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from functools import partial

from provisioning.errors import RemoteCommandError, SyncError
from provisioning.fence import claim_fencing_token, is_fenced
from provisioning.lsyncd_config import SyncRoot
from provisioning.progress import Progress, quiet
from provisioning.reverse_sync import first_rsync_complaint, rsync_transferred, unchanged_since
from provisioning.ssh import run_remote
from provisioning.sync import SyncController, for_each_root

__all__ = ["FlushError", "FlushReport", "flush_to_standby"]

# rsync's exit codes for "partial transfer" (some files failed, or vanished meanwhile): the verify
# that follows names the files, which says more than the code.
_PARTIAL = (23, 24)
_RC = "@@dumont-rsync-exit="


class FlushError(SyncError):
    """The standby could not be made to match the GPU; the GPU keeps running."""


@dataclass(frozen=True)
class FlushReport:
    seconds: float
    passes: int
    files_copied: int
    bytes_copied: int


def _push_command(controller: SyncController, root: SyncRoot, *, extra: list[str]) -> str:
    t = controller.topology
    target = f"{t.sync_target.destination}:{root.standby_path.rstrip('/')}/"
    argv = ["rsync", "-a", *extra, "-e", t.shared_rsh()]
    argv += [f"--exclude={e}" for e in (*root.excludes, *t.settings.extra_excludes)]
    argv += [f"{root.gpu_path.rstrip('/')}/", target]
    return shlex.join(argv)


async def _pass(controller: SyncController, root: SyncRoot, *, timeout: float) -> tuple[int, int]:
    command = _push_command(controller, root, extra=["--stats"])
    try:
        out = await run_remote(controller.topology.gpu, command, timeout=timeout)
    except RemoteCommandError as exc:
        if exc.returncode in _PARTIAL:
            return 0, 0
        why = first_rsync_complaint(exc.stderr)
        raise FlushError(
            f"final pass of {root.name} failed: {exc}" + (f" (first: {why})" if why else "")
        ) from exc
    return rsync_transferred(out)


async def _differences(
    controller: SyncController, root: SyncRoot, *, since: float, timeout: float
) -> tuple[list[str], bool]:
    """(losses, changed meanwhile): files still differing, split by the pass's start time.

    rsync's complaints (a file it cannot replace) go into the listing too: unchanged_since counts
    a line it does not understand as a loss, so a complaint can never pass as verified.
    """
    verify = ["--checksum", "--dry-run", "--out-format=%M %n"]
    command = f"TZ=UTC {_push_command(controller, root, extra=verify)} 2>&1; echo {_RC}$?"
    try:
        out = await run_remote(controller.topology.gpu, command, timeout=timeout)
    except RemoteCommandError as exc:
        raise FlushError(f"verifying {root.name} on the standby failed: {exc}") from exc
    listing, _, code = out.rpartition(_RC)
    if code.strip() not in ("0", *map(str, _PARTIAL)):
        tail = listing.strip().splitlines()[-1:] or ["no message"]
        raise FlushError(f"verifying {root.name} failed (rsync exit {code.strip()}): {tail[0]}")
    # The summary ("rsync error: some files/attrs were not transferred ...") only repeats the
    # complaints above it.
    lines = [line for line in listing.splitlines() if not line.startswith("rsync error:")]
    files = [line for line in lines if line.strip() and not line.rstrip().endswith("/")]
    losses = unchanged_since("\n".join(lines), since)
    return losses, len(files) > len(losses)


async def flush_to_standby(
    controller: SyncController,
    *,
    progress: Progress = quiet,
    timeout: float = 3600.0,
    passes: int = 3,
    fencing_token: int | None = None,
) -> FlushReport:
    """Steps 1-3 above. With ``fencing_token`` the standby records it first, or refuses it (a
    newer decision was acted on there) before lsyncd is touched; the caller's fence checks it
    again, in case a newer one arrived during the passes."""
    t = controller.topology
    started = time.monotonic()
    if fencing_token is not None:
        await claim_fencing_token(t.standby, t.standby_state_dir, fencing_token)
    if await is_fenced(t.standby, t.standby_state_dir):
        raise FlushError("the standby is fenced: the sync is not running, nothing to flush to")
    progress("stopping forward sync for the final pass")
    await controller.stop()
    try:
        files = size = 0
        for attempt in range(1, passes + 1):
            # The GPU's own clock: mtimes in the verify are the GPU's.
            pass_started = float(await run_remote(t.gpu, "date +%s.%N"))
            for copied, sent in await for_each_root(
                t.roots, partial(_pass, controller, timeout=timeout)
            ):
                files, size = files + copied, size + sent
            progress("verifying the standby file by file")
            verdicts = await for_each_root(
                t.roots, partial(_differences, controller, since=pass_started, timeout=timeout)
            )
            changing: list[str] = []
            for root, (losses, changed) in zip(t.roots, verdicts, strict=True):
                if losses:
                    shown = ", ".join(losses[:5])
                    raise FlushError(
                        f"{root.name} differs on the standby in {len(losses)} entries: {shown}"
                    )
                if changed:
                    changing.append(root.name)
            if not changing:
                progress(f"standby verified: {files} files, {size} bytes in {attempt} passes")
                return FlushReport(time.monotonic() - started, attempt, files, size)
            progress(f"{', '.join(changing)} changed during pass {attempt}: one more pass")
        raise FlushError(f"files kept changing on the GPU through {passes} passes; try again")
    except SyncError:
        progress("flush failed: restarting forward sync, the GPU keeps serving")
        await controller.start()
        raise
