"""Two directory trees standing in for the GPU's and the standby's disks, one real sshd for both,
and lsyncd deployed between them by the tests; `sync_bed` removes all of it, lsyncd's shared ssh
connections included. Used by the provisioning tests and the reverse-sync test of tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.lsyncd_config import (
    USER_DATA_EXCLUDES,
    WORKSPACE_EXCLUDES,
    LsyncdSettings,
    SyncRoot,
)
from provisioning.ssh import SshHost
from provisioning.sync import SyncTopology
from tests.support.sshd import Sshd

__all__ = ["SyncBed", "kill_lsyncd", "provision_cli", "start_provision_cli", "sync_bed"]


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

    def write_provision_config(self, path: Path) -> None:
        """provision.toml with every flag of cli_flags() and a 0.2 s sync delay, for hook lines
        that run `dumont-provision --config <path> ...`."""
        lines = ["[provisioning]"]
        for flag in self.cli_flags():
            key, value = flag.removeprefix("--").split("=", 1)
            lines.append(f'{key} = "{value}"')
        lines.append("delay = 0.2")
        path.write_text("\n".join(lines) + "\n")

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


async def start_provision_cli(
    *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``dumont-provision`` as a process of its own group, for a test that kills it mid-step
    (kill_group_async); its stderr is a pipe, its stdout discarded."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "provisioning.cli", *args,
        env=os.environ | (env or {}),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def provision_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``dumont-provision`` as a hook runs it: a fresh process, everything given by flags."""
    return subprocess.run(
        [sys.executable, "-m", "provisioning.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        check=False,
    )
