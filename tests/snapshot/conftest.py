"""Fixtures for the snapshot tests: a CLI harness, a real sshd, a fake GCS server."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.errors import ProvisioningError
from provisioning.snapshot.cli import add_subcommand
from tests.snapshot.fake_gcs import FakeGcs, serve_fake_gcs


@dataclass
class CliResult:
    code: int
    out: str
    err: str


RunCli = Callable[..., CliResult]


@pytest.fixture
def snapshot_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Runs `dumont-provision snapshot ...` as the main CLI will: ProvisioningError -> exit 2."""

    def run(*argv: str) -> CliResult:
        parser = argparse.ArgumentParser(prog="dumont-provision")
        add_subcommand(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["snapshot", *argv])
        try:
            code = args.handler(args)
        except ProvisioningError as exc:
            print(f"dumont-provision: {exc}", file=sys.stderr)
            code = 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Standby:
    config: Path
    host: str
    root: Path

    def destination(self, name: str = "repo") -> str:
        return f"ssh://{self.host}{self.root / name}"


@pytest.fixture
def standby(tmp_path: Path) -> Iterator[Standby]:
    """A real sshd on an ephemeral loopback port, key-only, killed by process group."""
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.fail("openssh-server is required (scripts/debian-packages.txt)")
    home = tmp_path / "ssh"
    home.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True
        )
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = _free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"PidFile {home / 'sshd.pid'}\nAuthorizedKeysFile {home / 'authorized_keys'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin yes\nMaxSessions 32\nMaxStartups 64\n"
        # bash run by sshd sources ~/.bashrc even for commands; root's here runs `pyenv init`,
        # whose rehash waits on a lock that parallel test runs hold. A standby's user is not
        # this machine's root: give the sessions a home without start-up files.
        f"SetEnv HOME={home / 'remote-home'}\n"
    )
    (home / "remote-home").mkdir()
    (home / "ssh_config").write_text(
        f"Host standby\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {home / 'client_key'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(home / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if sshd.poll() is not None or time.monotonic() > deadline:
                pytest.fail("sshd did not start")
            time.sleep(0.05)
        root = tmp_path / "standby"
        root.mkdir()
        yield Standby(home / "ssh_config", "standby", root)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sshd.pid, signal.SIGKILL)
        sshd.wait()


@pytest.fixture
def fake_gcs() -> Iterator[FakeGcs]:
    server, fake = serve_fake_gcs()
    thread = threading.Thread(target=server.serve_forever, name="fake-gcs", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
