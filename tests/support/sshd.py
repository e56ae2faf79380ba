"""Debian's sshd for tests: keys and config in a directory of the test's, one config for every
folder, and a teardown that leaves no sshd behind.

    with running_sshd(tmp_path / "sshd") as server:    # or the `sshd` fixture
        server.host()                                   # provisioning's SshHost for root@127.0.0.1

Two things every launcher here needs, and which once were done differently per folder:

- bash sources ~/.bashrc for a command run by sshd when SHLVL says it is the top-level shell; root's
  .bashrc on these machines runs `pyenv init`, which can block for a minute on pyenv's rehash lock.
  `SetEnv SHLVL=1` makes every session's bash a second-level shell, so no test depends on root's
  dotfiles (whatever the machine's home holds).
- Each connection's sshd child is a session leader of its own, outside the listener's process
  group: killing the listener's group leaves them (and their commands) running. stop() lists them
  by parent pid before the listener goes, then kills their groups too.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.ssh import SshHost
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import signal_group

__all__ = [
    "SSHD",
    "Sshd",
    "children_of",
    "keygen",
    "running_sshd",
    "sshd",
    "sshd_argv",
    "stop_sshd",
    "write_sshd_config",
]

SSHD = Path("/usr/sbin/sshd")


def keygen(path: Path) -> None:
    """An ed25519 key pair without a passphrase at `path` and `path`.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def write_sshd_config(directory: Path, *, address: str, port: int, authorized_keys: Path) -> Path:
    """sshd_config (and a host key, unless one is there) in `directory`: key-only root logins on
    address:port. Returns the config's path."""
    if not (directory / "host_key").exists():
        keygen(directory / "host_key")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized_keys}\nPidFile {directory / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100:30:200\n"
        "MaxSessions 100\n"
        "SetEnv SHLVL=1\n"  # see the module's docstring: no session sources root's .bashrc
    )
    return config


def sshd_argv(config: Path) -> list[str]:
    """sshd in the foreground (-D), logging to stderr (-e)."""
    return [str(SSHD), "-D", "-e", "-f", str(config)]


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # fields: state, ppid, pgrp, ...
                found.append(int(stat.parent.name))
    return found


def stop_sshd(process: subprocess.Popen[bytes]) -> None:
    """Kill the listener's group and each per-connection child's group; reap the listener."""
    children = children_of(process.pid)  # before the listener goes and they are re-parented
    signal_group(process.pid, signal.SIGKILL)
    process.wait()
    for child in children:
        with contextlib.suppress(PermissionError):
            signal_group(child, signal.SIGKILL)


@dataclass
class Sshd:
    port: int
    admin_key: Path
    authorized_keys: Path
    directory: Path

    def host(self) -> SshHost:
        return SshHost("127.0.0.1", "root", self.port, str(self.admin_key))


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[Sshd]:
    """sshd on an ephemeral 127.0.0.1 port, with an admin key that may log in as root; keys,
    config and log in `directory`. Stopped (with every connection's child) on the way out."""
    directory.mkdir(parents=True)
    keygen(directory / "admin_key")
    keys = directory / "authorized_keys"
    keys.write_text((directory / "admin_key.pub").read_text())
    port = free_port()
    config = write_sshd_config(directory, address="127.0.0.1", port=port, authorized_keys=keys)
    log_path = directory / "sshd.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            sshd_argv(config), start_new_session=True, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        try:
            wait_for_port(
                "127.0.0.1", port, 10, exited=lambda: process.poll() is not None, what="sshd"
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log_path.read_text()}") from None
        yield Sshd(port, directory / "admin_key", keys, directory)
    finally:
        stop_sshd(process)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """Debian's sshd on an ephemeral loopback port, keys and config all in tmp_path."""
    with running_sshd(tmp_path / "sshd") as server:
        yield server
