"""Filling a replacement GPU: the workflow after ``pair gpu-lost --replace`` and ``pair resume``.

The pair's service rents the machine; this module makes it the primary again, in the order that
loses nothing the user wrote on the standby meanwhile:

1. deploy the sync on the new GPU without starting it: the standby stays fenced;
2. restore the newest workspace snapshot from the bucket, when there is one (most bytes from a
   close, fast store; the small standby then sends only what changed since);
3. reverse-sync the standby to the GPU and verify it (this also lifts the fence and starts the
   forward sync again);
4. register the GPU's code-server as the proxy's primary, which fails back to it.

The CLI (``provisioning/cli_pair.py``, ``cli_park.py``), the proxy's hooks (which run that CLI)
and the tests all call :func:`replacement_filler` with a :class:`ReplacementPlan`.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provisioning.errors import RemoteCommandError, UsageError
from provisioning.progress import Progress
from provisioning.proxy_admin import set_backend
from provisioning.remote_snapshot import RemoteSnapshots, fill_from_snapshot
from provisioning.reverse_sync import reverse_sync
from provisioning.ssh import SshHost, run_remote
from provisioning.store import Pair
from provisioning.sync import SyncController
from provisioning.vast import VastInstance

if TYPE_CHECKING:
    from provisioning.gcp import StandbyVm

__all__ = [
    "ControllerFactory",
    "Filler",
    "ReplacementPlan",
    "primary_url",
    "replacement_filler",
    "wait_standby_provisioned",
]

# The sync between a pair's two machines, as the caller lays it out (users, paths, ports).
ControllerFactory = Callable[[Pair, VastInstance, "StandbyVm"], SyncController]
Filler = Callable[[Pair, VastInstance, "StandbyVm"], Awaitable[None]]


@dataclass(frozen=True)
class ReplacementPlan:
    """What filling a new GPU needs besides the machines themselves."""

    code_server_port: int
    timeout: float  # seconds for the reverse sync's long copies
    proxy_control: str | None = None  # None: the new primary is announced, not registered
    admin_token: str = ""
    # Where the GPU finds its workspace snapshots; None: the standby sends everything.
    snapshots: Callable[[SshHost], RemoteSnapshots] | None = None
    # The pair's workspace at a proxy that serves many (issue 15); None: the proxy's default.
    workspace: str | None = None


def primary_url(gpu: VastInstance, code_server_port: int) -> str:
    """The GPU's code-server as the proxy reaches it: Vast maps container ports to public ones."""
    port = gpu.host_port(code_server_port) or code_server_port
    return f"http://{gpu.public_ip or gpu.ssh_host}:{port}"


def replacement_filler(
    controller_for: ControllerFactory, plan: ReplacementPlan, progress: Progress
) -> Filler:
    """The ``fill`` step that PairService.gpu_lost and Parking.resume run on the new GPU."""

    async def fill(pair: Pair, gpu: VastInstance, standby: StandbyVm) -> None:
        controller = controller_for(pair, gpu, standby)
        # Deploy without starting: the standby stays fenced until reverse sync has filled the GPU.
        await controller.deploy(start=False)
        if plan.snapshots is not None:
            remote = plan.snapshots(controller.topology.gpu)
            restore_started = time.monotonic()
            if await fill_from_snapshot(remote, controller.topology, progress) is not None:
                progress(f"snapshot restored in {time.monotonic() - restore_started:.1f} s")
        report = await reverse_sync(controller, progress=progress, first_sync_timeout=plan.timeout)
        progress(
            f"the standby sent {report.files_copied} files, {report.bytes_copied} bytes"
            f" in {report.seconds:.1f} s"
        )
        url = primary_url(gpu, plan.code_server_port)
        if plan.proxy_control:
            await set_backend(
                plan.proxy_control, plan.admin_token, "primary", url, workspace=plan.workspace
            )
            where = f"workspace {plan.workspace}'s" if plan.workspace else "the proxy's"
            progress(f"registered {url} as {where} primary")
        else:
            progress(f"new primary ready at {url} (no --proxy-control: not registered)")

    return fill


async def wait_standby_provisioned(
    controller: SyncController, *, timeout: float, progress: Progress, poll: float = 5.0
) -> None:
    """The start-up script (packages, code-server) must be done before lsyncd can push."""
    t = controller.topology
    marker = shlex.quote(f"{t.standby_state_dir}/.provisioned")
    deadline = time.monotonic() + timeout
    progress(f"waiting for the standby's start-up script on {t.standby.describe()}")
    while True:
        try:
            await run_remote(t.standby, f"test -e {marker}", timeout=30)
            return
        except RemoteCommandError as exc:
            if time.monotonic() > deadline:
                raise UsageError(f"standby not provisioned after {timeout:g} s: {exc}") from exc
        await asyncio.sleep(poll)
