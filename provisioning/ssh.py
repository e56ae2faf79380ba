"""Running commands on the GPU and the standby over OpenSSH.

The control host (where ``dumont-provision`` runs, usually next to the proxy) reaches both machines
with an admin key. Fresh cloud VMs have host keys nobody has seen yet, so by default the host key is
accepted on first use into a known_hosts file of our own when one is given, or not checked at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from provisioning.errors import RemoteCommandError, UsageError

__all__ = ["SshHost", "run_remote"]

_ADDRESS = re.compile(
    r"^(?:ssh://)?(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?/?$"
)


@dataclass(frozen=True)
class SshHost:
    host: str
    user: str = "root"
    port: int = 22
    key: str | None = None  # path of the private key, on the machine that runs ssh
    known_hosts: str | None = None  # None: do not check host keys
    connect_timeout: float = 10.0

    @classmethod
    def parse(cls, address: str, *, key: str | None = None, what: str = "host") -> SshHost:
        """``[ssh://][user@]host[:port]``; ``what`` names the flag in the error message."""
        match = _ADDRESS.match(address.strip())
        if not match:
            raise UsageError(f"bad {what} address {address!r}: expected [ssh://][user@]host[:port]")
        port = int(match.group("port") or 22)
        if not 0 < port < 65536:
            raise UsageError(f"bad {what} port {port}: expected 1-65535")
        if key is not None and not Path(key).is_file():
            raise UsageError(f"missing SSH key {key}: no such file")
        return cls(host=match.group("host"), user=match.group("user") or "root", port=port, key=key)

    def with_key(self, key: str | None) -> SshHost:
        return replace(self, key=key)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh_options(self) -> list[str]:
        """Everything between ``ssh`` and the destination; also rsync's ``-e`` command."""
        options = ["-p", str(self.port), "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        options += ["-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}"]
        options += ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.key:
            options += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", "StrictHostKeyChecking=accept-new"]
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        else:
            options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return options

    def rsh(self) -> str:
        """The ssh command line rsync's ``-e`` wants (no destination)."""
        return shlex.join(["ssh", *self.ssh_options()])

    def describe(self) -> str:
        return f"{self.destination}:{self.port}"


async def run_remote(
    host: SshHost, script: str, *, stdin: bytes | None = None, timeout: float = 60.0
) -> str:
    """Run ``script`` with the remote user's shell; return stdout, raise on a non-zero exit."""
    argv = ["ssh", *host.ssh_options(), host.destination, script]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise RemoteCommandError(
            f"{host.describe()}: no answer within {timeout:g} s", returncode=-1, stderr=""
        ) from None
    if process.returncode != 0:
        text = err.decode(errors="replace").strip()
        last = text.splitlines()[-1] if text else "no message"
        raise RemoteCommandError(
            f"{host.describe()}: command failed (exit {process.returncode}): {last}",
            returncode=process.returncode or -1,
            stderr=text,
        )
    return out.decode(errors="replace")
