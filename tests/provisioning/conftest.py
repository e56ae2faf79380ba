"""Fixtures for provisioning: fake cloud APIs on loopback, and a real sshd with generated keys."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from provisioning.gcp import StandbyVms, load_credentials
from provisioning.lsyncd_config import LsyncdSettings, SyncRoot
from provisioning.pairing import PairService
from provisioning.ssh import SshHost
from provisioning.store import PairStore
from provisioning.sync import SyncTopology
from provisioning.vast import RetryPolicy, VastClient
from tests.provisioning.fake_gcp import FakeGcp
from tests.provisioning.fake_vast import API_KEY, FakeVast

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@dataclass
class FakeClouds:
    vast: FakeVast
    vast_url: str
    gcp: FakeGcp
    gcp_url: str


@pytest.fixture
async def clouds() -> AsyncIterator[FakeClouds]:
    vast, gcp = FakeVast(), FakeGcp()
    vast_server = TestServer(vast.app(), host="127.0.0.1")
    gcp_server = TestServer(gcp.app(), host="127.0.0.1")
    await vast_server.start_server()
    await gcp_server.start_server()
    try:
        yield FakeClouds(
            vast,
            f"http://127.0.0.1:{vast_server.port}",
            gcp,
            f"http://127.0.0.1:{gcp_server.port}",
        )
    finally:
        vast.release_all()
        gcp.release_all()
        await vast_server.close()
        await gcp_server.close()


@contextlib.asynccontextmanager
async def pair_service(clouds: FakeClouds, store: Path) -> AsyncIterator[PairService]:
    """The real clients, talking to the fakes, behind a PairService on a real SQLite store."""
    standbys = StandbyVms(
        "proj",
        "us-central1-a",
        credentials=load_credentials(None, anonymous=True),
        api_endpoint=clouds.gcp_url,
        retry=FAST_RETRY,
    )
    async with VastClient(API_KEY, base_url=clouds.vast_url, retry=FAST_RETRY) as vast:
        yield PairService(
            PairStore(store),
            vast,
            standbys,
            startup_script=lambda pair_id, spec: f"#!/bin/bash\n# {pair_id}\n",
            poll_interval=0.01,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    port: int
    admin_key: Path
    authorized_keys: Path
    directory: Path

    def host(self) -> SshHost:
        return SshHost("127.0.0.1", "root", self.port, str(self.admin_key))


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """Debian's sshd on an ephemeral loopback port, keys and config all in tmp_path."""
    directory = tmp_path / "sshd"
    directory.mkdir()
    _keygen(directory / "host_key")
    _keygen(directory / "admin_key")
    keys = directory / "authorized_keys"
    keys.write_text((directory / "admin_key.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {keys}\nPidFile {directory / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100:30:200\n"
        "MaxSessions 100\n"
        # bash sources ~/.bashrc for commands run by sshd when SHLVL says it is the top-level
        # shell; root's .bashrc on these machines runs `pyenv init`, which can block for a minute
        # on pyenv's rehash lock. The tests must not depend on root's dotfiles.
        "SetEnv SHLVL=1\n"
    )
    with (directory / "sshd.log").open("w") as log:
        process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(directory / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield Sshd(port, directory / "admin_key", keys, directory)
    finally:
        # Each connection's sshd child is a session leader of its own, outside the listener's
        # group: find them by parent pid before the listener goes, then kill their groups.
        children = _children(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # fields: state, ppid, pgrp, ...
                found.append(int(stat.parent.name))
    return found


def kill_lsyncd(state_dir: Path) -> None:
    """Kill an lsyncd our deploy started: its pid is its process group id."""
    pid_file = state_dir / "lsyncd.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@dataclass
class SyncBed:
    """Two directory trees standing in for the GPU's and the standby's disks, one sshd for both."""

    sshd: Sshd
    root: Path
    mux_dir: Path  # short: a unix socket path must stay under 108 bytes

    @property
    def gpu_workspace(self) -> Path:
        return self.root / "gpu" / "workspace"

    @property
    def gpu_user_data(self) -> Path:
        return self.root / "gpu" / "user-data"

    @property
    def standby_workspace(self) -> Path:
        return self.root / "standby" / "workspace"

    @property
    def standby_user_data(self) -> Path:
        return self.root / "standby" / "user-data"

    @property
    def gpu_state(self) -> Path:
        return self.root / "gpu-state"

    @property
    def standby_state(self) -> Path:
        return self.root / "standby-state"

    def topology(self, *, delay: float = 1.0, delete: str = "running") -> SyncTopology:
        from provisioning.lsyncd_config import USER_DATA_EXCLUDES, WORKSPACE_EXCLUDES

        host = self.sshd.host()
        return SyncTopology(
            gpu=host,
            standby=host,
            standby_from_gpu=SshHost("127.0.0.1", "root", self.sshd.port),
            roots=(
                SyncRoot(
                    "workspace",
                    str(self.gpu_workspace),
                    str(self.standby_workspace),
                    WORKSPACE_EXCLUDES,
                ),
                SyncRoot(
                    "user-data",
                    str(self.gpu_user_data),
                    str(self.standby_user_data),
                    USER_DATA_EXCLUDES,
                ),
            ),
            settings=LsyncdSettings(
                state_dir=str(self.gpu_state),
                delay=delay,
                delete=delete,  # type: ignore[arg-type]
                control_path=f"{self.mux_dir}/%C",
            ),
            standby_state_dir=str(self.standby_state),
            standby_authorized_keys=str(self.sshd.authorized_keys),
        )

    def cli_flags(self) -> list[str]:
        return [
            f"--gpu=root@127.0.0.1:{self.sshd.port}",
            f"--standby=root@127.0.0.1:{self.sshd.port}",
            f"--key={self.sshd.admin_key}",
            f"--workspace={self.gpu_workspace}:{self.standby_workspace}",
            f"--user-data={self.gpu_user_data}:{self.standby_user_data}",
            f"--gpu-state-dir={self.gpu_state}",
            f"--standby-state-dir={self.standby_state}",
            f"--standby-authorized-keys={self.sshd.authorized_keys}",
            f"--ssh-control-path={self.mux_dir}/%C",
        ]


@pytest.fixture
def sync_bed(sshd: Sshd, tmp_path: Path) -> Iterator[SyncBed]:
    bed = SyncBed(sshd, tmp_path / "bed", Path(tempfile.mkdtemp(prefix="dumont-mux-", dir="/tmp")))
    for path in (bed.gpu_workspace, bed.gpu_user_data, bed.gpu_state):
        path.mkdir(parents=True)
    try:
        yield bed
    finally:
        kill_lsyncd(bed.gpu_state)
        # lsyncd's shared ssh connections outlive it by ControlPersist: close them now.
        for socket_path in bed.mux_dir.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "unused"],
                capture_output=True,
                timeout=15,
                check=False,
                start_new_session=True,
            )
        shutil.rmtree(bed.mux_dir, ignore_errors=True)
