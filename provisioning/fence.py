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
"""

from __future__ import annotations

import re
import shlex

from provisioning.errors import FenceError, RemoteCommandError, UsageError
from provisioning.ssh import SshHost, run_remote

__all__ = [
    "GATE_MARKER",
    "authorized_keys_line",
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


async def fence_standby(standby: SshHost, state_dir: str, *, drain_timeout: float = 10.0) -> None:
    """Set the fence flag and drain (or kill) sync sessions that started before it."""
    _gate, flag, lock = _paths(state_dir)
    q = shlex.quote
    wait = max(1, round(drain_timeout))
    script = (
        f"set -e; mkdir -p {q(state_dir)}; touch {q(flag)}; sync;"
        f" if ! flock -x -w {wait} {q(lock)} true; then"
        f"   fuser -k -TERM {q(lock)} >/dev/null 2>&1 || true;"
        f"   flock -x -w 5 {q(lock)} true; fi"
    )
    try:
        await run_remote(standby, script, timeout=drain_timeout + 30)
    except RemoteCommandError as exc:
        raise FenceError(f"cannot fence standby {standby.describe()}: {exc}") from exc


async def unfence_standby(standby: SshHost, state_dir: str) -> None:
    _gate, flag, _lock = _paths(state_dir)
    try:
        await run_remote(standby, f"rm -f {shlex.quote(flag)}")
    except RemoteCommandError as exc:
        raise FenceError(f"cannot lift the fence on {standby.describe()}: {exc}") from exc


async def is_fenced(standby: SshHost, state_dir: str) -> bool:
    _gate, flag, _lock = _paths(state_dir)
    out = await run_remote(standby, f"if [ -e {shlex.quote(flag)} ]; then echo yes; fi")
    return out.strip() == "yes"
