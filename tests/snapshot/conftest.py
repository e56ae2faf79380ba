"""Fixtures for the snapshot tests: a CLI harness, the shared sshd as the standby, a fake GCS
server."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.errors import ProvisioningError
from provisioning.snapshot.cli import add_subcommand
from tests.snapshot.fake_gcs import FakeGcs, serve_fake_gcs
from tests.support.sshd import Sshd, sshd

__all__ = ["sshd"]  # the fixture, for `standby`


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


@dataclass
class Standby:
    config: Path
    host: str
    root: Path

    def destination(self, name: str = "repo") -> str:
        return f"ssh://{self.host}{self.root / name}"


@pytest.fixture
def standby(sshd: Sshd, tmp_path: Path) -> Standby:
    """The shared sshd (tests/support/sshd.py) as the standby, with an ssh_config naming it."""
    config = sshd.directory / "ssh_config"
    config.write_text(
        f"Host standby\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.admin_key}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    root = tmp_path / "standby"
    root.mkdir()
    return Standby(config, "standby", root)


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
