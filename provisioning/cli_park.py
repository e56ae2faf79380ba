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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from provisioning.cli_pair import (
    add_cloud_options,
    controller_for,
    pair_name,
    replacement_filler,
    service_from_args,
    workspace_of,
)
from provisioning.cli_sync import add_snapshot_options, add_sync_options, remote_snapshots_from_args
from provisioning.errors import ProxyAdminError, StateConflict, UsageError
from provisioning.gpu_idle import IdleClock, sample_gpu
from provisioning.progress import StderrProgress
from provisioning.proxy_admin import get_park, report_park
from provisioning.remote_snapshot import RemoteSnapshots
from provisioning.settings import add_options
from provisioning.ssh import SshHost
from provisioning.store import PairState

if TYPE_CHECKING:
    from provisioning.parking import Parking
    from provisioning.resume_schedule import ResumeSchedule

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
    "resume_at",
    "timezone",
)


@asynccontextmanager
async def _parking(args: argparse.Namespace) -> AsyncIterator[Parking]:
    from provisioning.parking import Parking, ProxyControl

    proxy = None
    if args.proxy_control:
        proxy = ProxyControl(
            args.proxy_control,
            args.admin_token or "",
            args.timeout,
            workspace=workspace_of(args, pair_name(args)),
        )
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
        raise UsageError("missing --proxy-control: a switchover switches the proxy")

    async def run() -> str:
        async with _parking(args) as parking:
            report = await parking.switchover(pair_name(args), f"switchover: {args.reason}")
            return (
                f"switched to the standby: {report.files_copied} files, {report.bytes_copied}"
                f" bytes in the final pass, verified ({report.seconds:.1f} s)"
            )

    print(asyncio.run(run()))
    return 0


def _park(args: argparse.Namespace) -> int:
    async def run() -> str:
        async with _parking(args) as parking:
            report = await parking.park(pair_name(args), args.park_mode, args.reason)
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
                    report = await parking.resume(pair_name(args), replacement_filler(args))
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
            gpu, _standby = await service.machines(pair_name(args))
        host = SshHost(gpu.ssh_host, "root", gpu.ssh_port, args.key, args.known_hosts)
        sample = await sample_gpu(host, args.nvidia_smi)
        state = "idle" if sample.idle(args.idle_threshold) else "busy"
        pids = ",".join(map(str, sample.compute_pids)) or "none"
        return f"{state}: utilization {sample.utilization:g} %, compute processes {pids}"

    print(asyncio.run(run()))
    return 0


def _autopark(args: argparse.Namespace) -> int:
    """Watch the GPU; announce, honour "Keep it", park when idle for --park-after. Without a resume
    schedule that is the end; with one (--resume-at) it runs on: resume at the next scheduled
    time, watch the new GPU, park it again, for as long as it runs."""
    from provisioning.resume_schedule import ResumeSchedule

    name = pair_name(args)
    schedule = ResumeSchedule.parse(args.resume_at or [], args.timezone)

    async def run() -> str:
        async with _parking(args) as parking:
            store = parking.service.store
            while True:
                state = store.get(name).state
                if state is PairState.READY:
                    parked = await _watch_and_park(args, parking, name)
                    if schedule is None and parked is not None:
                        return parked
                elif state is PairState.PARKED and schedule is not None:
                    await _resume_on_schedule(args, parking, name, schedule)
                elif state in (PairState.PARKING, PairState.RESUMING):
                    await asyncio.sleep(args.check_interval)  # another process is at work
                else:
                    hint = {
                        PairState.DEGRADED: " (run pair reconcile)",
                        PairState.PARKED: " (resume_at brings it back on a schedule)",
                    }.get(state, "")
                    raise StateConflict(f"pair {name} is {state.value}: nothing to watch{hint}")

    print(asyncio.run(run()))
    return 0


async def _watch_and_park(args: argparse.Namespace, parking: Parking, name: str) -> str | None:
    """Sample the GPU until it has been idle for --park-after, then park it. None when the pair
    left the ready state meanwhile (parked or resumed by someone else)."""
    progress = StderrProgress()
    clock = IdleClock(args.idle_threshold, args.park_after, min(args.announce, args.park_after))
    store = parking.service.store
    gpu, _standby = await parking.service.machines(name)
    host = SshHost(gpu.ssh_host, "root", gpu.ssh_port, args.key, args.known_hosts)
    kept: object = None
    while store.get(name).state is PairState.READY:
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
    return None


async def _resume_on_schedule(
    args: argparse.Namespace, parking: Parking, name: str, schedule: ResumeSchedule
) -> None:
    """Wait for the next scheduled time, then resume; with no matching offer the pair stays
    parked, the IDE and dashboard say so, and the next try comes --offer-retry-interval later.
    Returns early when someone else resumes the pair (the IDE's button)."""
    from provisioning.errors import NoOfferError

    progress = StderrProgress()
    store = parking.service.store
    due = schedule.next_after(datetime.now(UTC))
    progress(f"parked: the GPU comes back at {schedule.describe(due)}")
    while store.get(name).state is PairState.PARKED:
        now = datetime.now(UTC)
        if now >= due:
            retry_at = now + timedelta(seconds=args.offer_retry_interval)
            try:
                report = await parking.resume(
                    name, replacement_filler(args), next_try=f"at {schedule.describe(retry_at)}"
                )
            except NoOfferError as exc:
                progress(f"no GPU offer: still parked, next try at {schedule.describe(retry_at)}")
                progress(f"({exc})")
                due = retry_at
            else:
                progress(f"resumed on schedule: GPU {report.gpu.id} in {report.seconds:.1f} s")
                return
        wait = (due - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, min(args.check_interval, wait)))


def _watch_standby(args: argparse.Namespace) -> int:
    """Keep the pair's spot standby. GCE's preemption notice, reported from inside the VM (its
    start-up script's watcher), raises the alert ~30 s before the Compute API shows anything;
    once the VM has stopped (or is gone) reconcile restarts (or recreates) it, and the alert
    clears. Runs until killed: a systemd service beside ``autopark``."""
    from provisioning.errors import ProvisioningError

    name = pair_name(args)
    progress = StderrProgress()

    async def run() -> None:
        async with service_from_args(args) as service:
            vm_name = service.store.get(name).standby_name
            missing = False  # the proxy was told the standby is gone
            stale = False  # restarted: the last boot's TRUE may linger until the VM writes FALSE
            while True:
                try:
                    vm = await service.standbys.find(vm_name)
                    notice = vm is not None and not vm.stopped
                    notice = notice and await service.standbys.preempted(vm_name)
                    stale = stale and notice
                    if vm is None or vm.stopped:
                        what = "deleted" if vm is None else f"{vm.status} (preempted)"
                        progress(f"standby {vm_name} is {what}: restarting it")
                        await _report_standby(args, "restarting", progress)
                        for repair in await service.reconcile(name):
                            progress(str(repair))
                        await _report_standby(args, "present", progress)
                        missing, stale = False, True
                    elif notice and not stale and not missing:
                        progress(
                            f"standby {vm_name} reports GCE's preemption notice: it stops soon"
                        )
                        await _report_standby(args, "missing", progress)
                        missing = True
                except ProvisioningError as exc:  # a cloud hiccup must not end the watch
                    progress(f"warning: {exc}")
                await asyncio.sleep(args.check_interval)

    asyncio.run(run())
    return 0


async def _report_standby(args: argparse.Namespace, state: str, progress: StderrProgress) -> None:
    if not args.proxy_control:
        return
    try:
        workspace = workspace_of(args, pair_name(args))
        await report_park(
            args.proxy_control, args.admin_token or "", None, standby=state, workspace=workspace
        )
    except ProxyAdminError as exc:
        progress(f"warning: standby {state} not reported to the proxy: {exc}")


async def _keep_until(args: argparse.Namespace) -> object:
    try:
        workspace = workspace_of(args, pair_name(args))
        park = await get_park(args.proxy_control, args.admin_token or "", workspace=workspace)
        return park.get("keep_until")
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
        "watch-standby": (
            "restart the spot standby after a preemption (noticed from inside the VM)",
            _watch_standby,
        ),
    }
    for verb, (text, handler) in verbs.items():
        parser = actions.add_parser(verb, help=text, description=text)
        parser.add_argument("name", nargs="?", metavar="NAME", help="the pair")
        parser.add_argument("--pair", help="the pair (same as NAME)")
        # Not a setting: gpu-lost's --reason has another default (the hook's DUMONT_REASON).
        parser.add_argument("--reason", default="requested", help="why, shown to the user")
        add_options(parser, "standby_ssh_port", "code_server_port", "base_domain", *PARK_OPTIONS)
        add_sync_options(parser, with_hosts=False)
        add_snapshot_options(parser)
        add_cloud_options(parser)
        parser.set_defaults(handler=handler)
