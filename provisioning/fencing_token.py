"""Fencing tokens on the standby: a deposed leader's late hook changes nothing (issue 16).

With several proxy replicas agreeing through etcd, the leader runs the failover hooks and passes
``DUMONT_FENCING_TOKEN``: the etcd revision at which its decision was written. A leader that lost
its lease may not know it yet, and its hook can reach the standby after the new leader's. So the
standby keeps the highest token it has seen in ``<state dir>/fencing-token`` and each guarded step
(fence, unfence, the claim at the start of a flush or reverse sync) runs as ONE remote command
that, under an exclusive ``flock``:

1. reads the recorded token (none yet: 0);
2. refuses a lower token before anything changes (exit ``TOKEN_REFUSED``, the recorded token on
   stderr), which the CLI turns into a StateConflict: exit 3, one line naming both tokens;
3. records a higher one (a tmp file, fsynced, renamed over the old: never a torn file);
4. runs the step itself while still holding the lock.

Compare, record and act under one lock: two racing hooks cannot both read the old token and both
act, and a step refused at 2 has not touched the flag. Equal tokens pass (a hook retried, or
``sync reverse`` re-checking its own token before it lifts the fence).

Without a token nothing here runs and the file is neither read nor written: one proxy on its own
(no etcd) works as before, and an operator's hand-typed ``sync unfence`` is never refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from provisioning.errors import RemoteCommandError, StaleFencingToken, UsageError
from provisioning.ssh import SshHost

__all__ = [
    "ENV_VAR",
    "MAX_TOKEN",
    "TOKEN_FILE",
    "TOKEN_REFUSED",
    "fencing_token_from",
    "parse_fencing_token",
    "stale_token",
    "token_guard",
]

ENV_VAR = "DUMONT_FENCING_TOKEN"
TOKEN_FILE = "fencing-token"
# etcd revisions are int64; the remote shell's `[ -ge ]` compares intmax_t, so nothing larger
# may ever be written there.
MAX_TOKEN = 2**63 - 1
# The guard's exit status when the standby has seen a newer token; ssh passes it through.
TOKEN_REFUSED = 79
_SEEN_MARK = "@@dumont-fencing-token-seen="
_SEEN = re.compile(re.escape(_SEEN_MARK) + r"([0-9]+)")
_DIGITS = re.compile(r"[0-9]+", re.ASCII)  # int() takes " 7", "+7", "7_0", Arabic-Indic digits
_LOCK_WAIT_S = 30


def parse_fencing_token(raw: str, *, what: str) -> int:
    """A positive decimal integer up to int64's maximum; else a one-line UsageError."""
    if not _DIGITS.fullmatch(raw) or not 0 < int(raw) <= MAX_TOKEN:
        raise UsageError(
            f"bad {what} {raw!r}: expected a positive integer (the etcd revision of the decision)"
        )
    return int(raw)


def fencing_token_from(flag: str | None, environ: Mapping[str, str]) -> int | None:
    """``--fencing-token``, else ``DUMONT_FENCING_TOKEN`` (what the proxy's leader hands its hooks),
    else None: no fencing check. A variable that is set but empty is malformed, not absent: a
    leader that meant to pass a token must not silently skip the check."""
    if flag is not None:
        return parse_fencing_token(flag, what="--fencing-token")
    if ENV_VAR in environ:
        return parse_fencing_token(environ[ENV_VAR], what=ENV_VAR)
    return None


_GUARD = """(
flock -x -w {wait} 9 || {{ printf 'dumont: %s stayed locked for {wait} s\\n' {lock} >&2; exit 75; }}
seen=0
if [ -e {token_file} ]; then seen=$(cat {token_file}); fi
unreadable() {{ printf 'dumont: unreadable fencing token in %s\\n' {token_file} >&2; exit 76; }}
case "$seen" in ''|*[!0-9]*) unreadable;; esac
cmp=0; [ {token} -ge "$seen" ] 2>/dev/null || cmp=$?
if [ "$cmp" -eq 1 ]; then echo "{mark}$seen" >&2; exit {refused}; fi
if [ "$cmp" -ne 0 ]; then unreadable; fi
if [ {token} -gt "$seen" ]; then
    printf '%s\\n' {token} > {tmp}; sync {tmp}; mv -f {tmp} {token_file}; sync {state_dir}
fi
{action}
) 9>>{lock}"""


def token_guard(state_dir: str, token: int, action: str) -> str:
    """Shell (POSIX sh, under the caller's ``set -e``) that compares and records ``token`` in
    ``state_dir`` (which must exist), then runs ``action``, all under the token's lock.
    ``[ -ge ]`` exits 2 on a value it cannot compare: that is an unreadable file, never a pass."""
    if not 0 < token <= MAX_TOKEN:
        raise UsageError(f"bad fencing token {token}: expected 1..{MAX_TOKEN}")
    q = shlex.quote
    token_file = f"{state_dir}/{TOKEN_FILE}"
    lock = f"{state_dir}/{TOKEN_FILE}.lock"
    return _GUARD.format(
        wait=_LOCK_WAIT_S,
        lock=q(lock),
        token_file=q(token_file),
        tmp=q(f"{token_file}.tmp"),
        state_dir=q(state_dir),
        token=token,
        mark=_SEEN_MARK,
        refused=TOKEN_REFUSED,
        action=action,
    )


def stale_token(
    exc: RemoteCommandError, token: int | None, standby: SshHost, outcome: str
) -> StaleFencingToken | None:
    """The refusal ``exc`` carries, as one line naming both tokens and ``outcome`` (what the
    refused command left as it was); None when ``exc`` is any other failure."""
    seen = _SEEN.search(exc.stderr)
    if token is None or exc.returncode != TOKEN_REFUSED or seen is None:
        return None
    newer = int(seen.group(1))
    return StaleFencingToken(
        f"fencing token {token} refused: standby {standby.describe()} has already seen token"
        f" {newer} from a newer decision; {outcome}",
        token=token,
        seen=newer,
    )
