"""``dumont-provision pair switchover|park|resume|idle|autopark NAME`` (issue 18).

The pair's machines come from the clouds (Vast's SSH address for the GPU, the standby's external
IP), as for ``gpu-lost --replace``; the proxy's control API (``--proxy-control``) is where the
switch happens and where each phase is reported for the IDE notice and the dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from provisioning.cli_pair import (
    add_cloud_options,
    controller_for,
    replacement_filler,
    service_from_args,
)
from provisioning.cli_sync import add_snapshot_options, add_sync_options, remote_snapshots_from_args
from provisioning.errors import ConfigError, ProxyAdminError
from provisioning.gpu_idle import IdleClock, sample_gpu
from provisioning.progress import StderrProgress
from provisioning.proxy_admin import get_park
from provisioning.remote_snapshot import RemoteSnapshots
from provisioning.settings import add_options
from provisioning.ssh import SshHost

if TYPE_CHECKING:
    from provisioning.parking import Parking

__all__ = ["PARK_OPTIONS", "add_park_verbs"]

PARK_OPTIONS = (
    "park_mode",
    "nvidia_smi",
    "idle_threshold",
    "park_after",
    "announce",
    "check_interval",
    "offer_retry_for",
    "offer_retry_interval",
)


def _pair_name(args: argparse.Namespace) -> str:
    name: str | None = args.name or args.pair
    if not name:
        raise ConfigError("missing pair: dumont-provision pair VERB NAME")
    return name


@asynccontextmanager
async def _parking(args: argparse.Namespace) -> AsyncIterator[Parking]:
    from provisioning.parking import Parking, ProxyControl

    proxy = None
    if args.proxy_control:
        proxy = ProxyControl(args.proxy_control, args.admin_token or "", args.timeout)
    snapshots = None
    if getattr(args, "snapshot_destination", None):

        def snapshots_for(gpu: SshHost) -> RemoteSnapshots:
            return remote_snapshots_from_args(args, gpu)

        snapshots = snapshots_for
    async with service_from_args(args) as service:
        yield Parking(
            service,
            lambda pair, gpu, standby: controller_for(args, pair, gpu, standby),
            proxy=proxy,
            snapshots_for=snapshots,
            progress=StderrProgress(),
            timeout=args.timeout,
        )


def _switchover(args: argparse.Namespace) -> int:
    if not args.proxy_control:
        raise ConfigError("missing --proxy-control: a switchover switches the proxy")

    async def run() -> str:
        async with _parking(args) as parking:
            report = await parking.switchover(_pair_name(args), f"switchover: {args.reason}")
            return (
                f"switched to the standby: {report.files_copied} files, {report.bytes_copied}"
                f" bytes in the final pass, verified ({report.seconds:.1f} s)"
            )

    print(asyncio.run(run()))
    return 0


def _park(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with _parking(args) as parking:
            report = await parking.park(_pair_name(args), args.park_mode, args.reason)
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in report.steps.items())
            return f"parked ({report.mode}) in {report.seconds:.1f} s: {steps}"

    print(asyncio.run(run()))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from provisioning.errors import NoOfferError

    progress = StderrProgress()

    async def run() -> str:
        deadline = time.monotonic() + args.offer_retry_for
        async with _parking(args) as parking:
            while True:
                try:
                    report = await parking.resume(_pair_name(args), replacement_filler(args))
                    break
                except NoOfferError:
                    # The pair stays parked (and the proxy says so) until an offer appears.
                    if time.monotonic() + args.offer_retry_interval > deadline:
                        raise
                    progress(f"no GPU offer yet: trying again in {args.offer_retry_interval:g} s")
                    await asyncio.sleep(args.offer_retry_interval)
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in report.steps.items())
            return f"resumed on GPU {report.gpu.id} in {report.seconds:.1f} s: {steps}"

    print(asyncio.run(run()))
    return 0


def _idle(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with service_from_args(args) as service:
            gpu, _standby = await service.machines(_pair_name(args))
        host = SshHost(gpu.ssh_host, "root", gpu.ssh_port, args.key, args.known_hosts)
        sample = await sample_gpu(host, args.nvidia_smi)
        state = "idle" if sample.idle(args.idle_threshold) else "busy"
        pids = ",".join(map(str, sample.compute_pids)) or "none"
        return f"{state}: utilization {sample.utilization:g} %, compute processes {pids}"

    print(asyncio.run(run()))
    return 0


def _autopark(args: argparse.Namespace) -> int:
    """Watch the GPU; announce, honour "Keep it", park when idle for --park-after; then exit."""
    name = _pair_name(args)
    progress = StderrProgress()
    clock = IdleClock(args.idle_threshold, args.park_after, min(args.announce, args.park_after))

    async def run() -> str:
        async with _parking(args) as parking:
            gpu, _standby = await parking.service.machines(name)
            host = SshHost(gpu.ssh_host, "root", gpu.ssh_port, args.key, args.known_hosts)
            kept: object = None
            while True:
                now = time.monotonic()
                verdict = clock.observe(await sample_gpu(host, args.nvidia_smi), now)
                if args.proxy_control:
                    keep = await _keep_until(args)
                    if keep is not None and keep != kept:
                        kept = keep
                        clock.keep(now)
                        progress("the user kept the GPU: park postponed")
                        verdict = "idle"
                    if verdict == "announce":
                        idle_for, park_in = clock.idle_for(now), clock.park_in(now)
                        await parking.announce(idle_for, park_in, args.park_after)
                if verdict == "park":
                    minutes = clock.idle_for(now) / 60
                    reason = f"GPU idle for {minutes:.0f} min"
                    report = await parking.park(name, args.park_mode, reason)
                    return f"parked ({report.mode}) in {report.seconds:.1f} s after {reason}"
                await asyncio.sleep(args.check_interval)

    print(asyncio.run(run()))
    return 0


async def _keep_until(args: argparse.Namespace) -> object:
    try:
        return (await get_park(args.proxy_control, args.admin_token or "")).get("keep_until")
    except ProxyAdminError as exc:
        StderrProgress()(f"warning: cannot read the proxy's park state: {exc}")
        return None


def add_park_verbs(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs = {
        "switchover": ("planned switch to the standby: flush, verify, fence, switch", _switchover),
        "park": ("switch to the standby, snapshot, then destroy (or stop) the GPU", _park),
        "resume": ("rent a GPU, fill it from the snapshot and the standby, fail back", _resume),
        "idle": ("read the GPU's utilization and compute processes over SSH", _idle),
        "autopark": ("watch the GPU; announce, then park it once idle long enough", _autopark),
    }
    for verb, (text, handler) in verbs.items():
        parser = actions.add_parser(verb, help=text, description=text)
        parser.add_argument("name", nargs="?", metavar="NAME", help="the pair")
        parser.add_argument("--pair", help="the pair (same as NAME)")
        # Not a setting: gpu-lost's --reason has another default (the hook's DUMONT_REASON).
        parser.add_argument("--reason", default="requested", help="why, shown to the user")
        add_options(parser, "standby_ssh_port", "code_server_port", *PARK_OPTIONS)
        add_sync_options(parser, with_hosts=False)
        add_snapshot_options(parser)
        add_cloud_options(parser)
        parser.set_defaults(handler=handler)
