"""Fencing: the standby refuses writes from the old primary before it serves the user.

The GPU's sync key is installed on the standby with a forced command, the *gate*. The gate takes a
shared lock, then looks for the fence flag:

- no flag: it runs the command lsyncd asked for (rsync's server side, or the ``mv``/``rm`` of
  rsyncssh);
- flag present: it hands the session to Debian's ``rrsync -ro``, which serves reads only. Every
  write, move and delete from the old primary is refused; reverse sync can still pull the standby's
  files to the primary through the same key.

Fencing sets the flag and then takes the lock exclusively: sessions that started before the flag
finish (they are the primary's last legitimate writes), and one that hangs (a partition) is killed
after ``drain_timeout``. After that nothing the old primary sends can delete or overwrite a file.

Given a fencing token (issue 16: several proxy replicas, one leader), setting and lifting the flag
happen inside provisioning.fencing_token's guard, in the same remote command: a token older than
the standby's record is refused and the flag stays as it was.
"""

from __future__ import annotations

import re
import shlex

from provisioning.errors import FenceError, RemoteCommandError, UsageError
from provisioning.fencing_token import stale_token, token_guard
from provisioning.ssh import SshHost, run_remote

__all__ = [
    "GATE_MARKER",
    "authorized_keys_line",
    "claim_fencing_token",
    "fence_standby",
    "gate_script",
    "install_gate",
    "is_fenced",
    "unfence_standby",
]

GATE_MARKER = "dumont-sync-gate"

_GATE = """#!/bin/sh
# {marker}: forced command of the GPU's sync key on this standby (installed by dumont-provision).
# Fenced (flag present): read-only rsync only, so the old primary can neither write nor delete.
flag={flag}
exec 9<{lock} || exit 76
flock -s 9 || exit 76
if [ -e "$flag" ]; then
    echo "dumont: this standby is fenced; writes from the old primary are refused" >&2
    exec /usr/bin/rrsync -ro /
fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


_SAFE_DIR = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _paths(state_dir: str) -> tuple[str, str, str]:
    # The gate's path ends up inside command="..." in authorized_keys: keep it to plain characters.
    if not _SAFE_DIR.match(state_dir):
        raise UsageError(
            f"bad standby state dir {state_dir!r}: an absolute path of letters, digits, . _ / -"
        )
    return f"{state_dir}/sync-gate", f"{state_dir}/fenced", f"{state_dir}/fence.lock"


def gate_script(state_dir: str) -> str:
    _gate, flag, lock = _paths(state_dir)
    return _GATE.format(marker=GATE_MARKER, flag=shlex.quote(flag), lock=shlex.quote(lock))


def authorized_keys_line(public_key: str, state_dir: str) -> str:
    gate, _flag, _lock = _paths(state_dir)
    restrictions = "no-pty,no-agent-forwarding,no-port-forwarding,no-X11-forwarding"
    return f'command="{gate}",{restrictions} {public_key.strip()} {GATE_MARKER}'


async def install_gate(
    standby: SshHost, state_dir: str, authorized_keys: str, public_key: str
) -> None:
    """Install the gate script and (replacing any earlier one) the gated key line."""
    gate, _flag, lock = _paths(state_dir)
    q = shlex.quote
    keys = (
        q(authorized_keys) if authorized_keys.startswith("/") else f'"$HOME"/{q(authorized_keys)}'
    )
    line = authorized_keys_line(public_key, state_dir)
    script = (
        f"set -e; umask 077; mkdir -p {q(state_dir)}; touch {q(lock)}; chmod 0644 {q(lock)};"
        f" cat > {q(gate)}.tmp; chmod 0755 {q(gate)}.tmp; mv {q(gate)}.tmp {q(gate)};"
        f" keys={keys};"
        ' mkdir -p "$(dirname "$keys")"; touch "$keys";'
        f' grep -v {q(GATE_MARKER)} "$keys" > "$keys.tmp" || true;'
        f' echo {q(line)} >> "$keys.tmp"; mv "$keys.tmp" "$keys"'
    )
    await run_remote(standby, script, stdin=gate_script(state_dir).encode())


async def _run_guarded(
    standby: SshHost,
    script: str,
    fencing_token: int | None,
    *,
    failed: str,
    refused: str,
    timeout: float = 60.0,
) -> None:
    """Run a fence step; a refused token becomes StaleFencingToken, anything else FenceError."""
    try:
        await run_remote(standby, script, timeout=timeout)
    except RemoteCommandError as exc:
        if stale := stale_token(exc, fencing_token, standby, refused):
            raise stale from None
        raise FenceError(f"{failed} {standby.describe()}: {exc}") from exc


async def fence_standby(
    standby: SshHost,
    state_dir: str,
    *,
    drain_timeout: float = 10.0,
    fencing_token: int | None = None,
) -> None:
    """Set the fence flag and drain (or kill) sync sessions that started before it."""
    _gate, flag, lock = _paths(state_dir)
    q = shlex.quote
    wait = max(1, round(drain_timeout))
    set_flag = f"touch {q(flag)}"
    if fencing_token is not None:
        set_flag = token_guard(state_dir, fencing_token, set_flag)
    script = (
        f"set -e; mkdir -p {q(state_dir)}; {set_flag}; sync;"
        f" if ! flock -x -w {wait} {q(lock)} true; then"
        f"   fuser -k -TERM {q(lock)} >/dev/null 2>&1 || true;"
        f"   flock -x -w 5 {q(lock)} true; fi"
    )
    await _run_guarded(
        standby,
        script,
        fencing_token,
        failed="cannot fence standby",
        refused="the fence is left as it was",
        timeout=drain_timeout + 30,
    )


async def unfence_standby(
    standby: SshHost,
    state_dir: str,
    *,
    fencing_token: int | None = None,
    refused: str = "the fence stays",
) -> None:
    """Lift the fence; with a token, only if the standby has seen no newer one (``refused``: what
    the caller leaves behind when it has)."""
    _gate, flag, _lock = _paths(state_dir)
    q = shlex.quote
    script = f"rm -f {q(flag)}"
    if fencing_token is not None:
        script = f"set -e; mkdir -p {q(state_dir)}; {token_guard(state_dir, fencing_token, script)}"
    await _run_guarded(
        standby, script, fencing_token, failed="cannot lift the fence on", refused=refused
    )


async def claim_fencing_token(standby: SshHost, state_dir: str, fencing_token: int) -> None:
    """Record ``fencing_token`` on the standby, or refuse it (StaleFencingToken) when the standby
    has seen a newer one: the first step of a flush or reverse sync, before anything moves."""
    _paths(state_dir)  # only to validate it: the guard's paths live in the same dir
    guard = token_guard(state_dir, fencing_token, ":")
    await _run_guarded(
        standby,
        f"set -e; mkdir -p {shlex.quote(state_dir)}; {guard}",
        fencing_token,
        failed="cannot check the fencing token on",
        refused="nothing was changed",
    )


async def is_fenced(standby: SshHost, state_dir: str) -> bool:
    _gate, flag, _lock = _paths(state_dir)
    out = await run_remote(standby, f"if [ -e {shlex.quote(flag)} ]; then echo yes; fi")
    return out.strip() == "yes"
