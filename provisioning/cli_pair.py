"""``dumont-provision pair ...``: create, destroy, list, show, reconcile, gpu-lost.

google-cloud-compute takes seconds to import, so the cloud modules are imported by the handlers
that need them: the proxy's hooks call ``sync fence`` on failover, and that must start at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.cli_sync import remote_snapshots_from_args
from provisioning.errors import UsageError
from provisioning.progress import StderrProgress
from provisioning.remote_snapshot import RemoteSnapshots
from provisioning.replacement import Filler, ReplacementPlan, wait_standby_provisioned
from provisioning.replacement import replacement_filler as fill_replacement
from provisioning.settings import add_options
from provisioning.ssh import SshHost
from provisioning.startup_script import render_gpu_onstart, render_startup_script
from provisioning.store import Pair, PairStore
from provisioning.sync import SyncController
from provisioning.vast import VastClient, VastInstance

if TYPE_CHECKING:
    from provisioning.gcp import StandbyVm
    from provisioning.pairing import PairService, PairSpec

__all__ = [
    "CLOUD_OPTIONS",
    "add_cloud_options",
    "add_pair_subcommand",
    "controller_for",
    "print_pair",
    "replacement_filler",
    "service_from_args",
]


CLOUD_OPTIONS = (
    "vast_url",
    "vast_api_key_file",
    "gcp_project",
    "gcp_zone",
    "gcp_credentials",
    "gcp_endpoint",
    "gcp_anonymous",
    "poll_interval",
)


def add_cloud_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, *CLOUD_OPTIONS)


def _vast_key(args: argparse.Namespace) -> str:
    if args.vast_api_key_file:
        try:
            key = Path(args.vast_api_key_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read Vast.ai API key file {args.vast_api_key_file}") from exc
    else:
        key = os.environ.get("VAST_API_KEY", "").strip()
    if not key:
        raise UsageError("missing Vast.ai API key: set VAST_API_KEY or --vast-api-key-file")
    return key


@asynccontextmanager
async def service_from_args(args: argparse.Namespace) -> AsyncIterator[PairService]:
    from provisioning.gcp import StandbyVms, load_credentials, validate_zone
    from provisioning.pairing import PairService

    # Cheap checks first, so the one-line error names what the user got wrong.
    vast_key = _vast_key(args)
    validate_zone(args.gcp_zone)
    if not args.gcp_project:
        raise UsageError("missing Google Cloud project: pass --gcp-project")
    if args.gcp_anonymous and not args.gcp_endpoint:
        raise UsageError("--gcp-anonymous needs --gcp-endpoint: it is for local fake APIs only")
    credentials = load_credentials(args.gcp_credentials, anonymous=args.gcp_anonymous)
    standbys = StandbyVms(
        args.gcp_project,
        args.gcp_zone,
        credentials=credentials,
        api_endpoint=args.gcp_endpoint,
    )
    progress = StderrProgress()

    def startup_script(pair_id: str, spec: PairSpec) -> str:
        return render_startup_script(
            pair_id=pair_id, ssh_user=spec.standby_user, ssh_public_key=spec.ssh_public_key
        )

    async with VastClient(vast_key, base_url=args.vast_url) as vast:
        yield PairService(
            PairStore(Path(args.store)),
            vast,
            standbys,
            startup_script=startup_script,
            progress=progress,
            poll_interval=args.poll_interval,
        )


def _spec_from_args(args: argparse.Namespace) -> PairSpec:
    from provisioning.pairing import PairSpec

    if not args.ssh_public_key:
        raise UsageError("missing key: --ssh-public-key FILE (the pair's admin public key)")
    try:
        public_key = Path(args.ssh_public_key).read_text().strip()
    except OSError as exc:
        raise UsageError(f"missing key: cannot read {args.ssh_public_key}") from exc
    try:
        query: dict[str, Any] = json.loads(args.gpu_query) if args.gpu_query else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"bad --gpu-query: not JSON ({exc.msg})") from exc
    if not isinstance(query, dict):
        raise UsageError("bad --gpu-query: expected a JSON object")
    if args.gpu_name:
        query["gpu_name"] = {"eq": args.gpu_name}
    query.setdefault("num_gpus", {"eq": args.num_gpus})
    return PairSpec(
        gpu_query=query,
        image=args.image,
        disk_gb=args.disk,
        standby_user=args.standby_user,
        ssh_public_key=public_key,
        onstart=render_gpu_onstart(),
        max_price=args.max_price,
        termination_action=args.termination_action,
    )


def print_pair(pair: Pair) -> None:
    gpu = pair.gpu_instance_id if pair.gpu_instance_id is not None else "-"
    print(f"{pair.id}\t{pair.state.value}\tgpu={gpu}\tstandby={pair.standby_name}")


def _create(args: argparse.Namespace) -> int:
    from provisioning.pairing import validate_pair_id

    validate_pair_id(args.pair)
    spec = _spec_from_args(args)

    async def run() -> Pair:
        async with service_from_args(args) as service:
            pair = await service.create(args.pair, spec)
            if args.deploy_sync:
                gpu, standby = await service.machines(pair.id)
                controller = controller_for(args, pair, gpu, standby)
                await wait_standby_provisioned(
                    controller, timeout=args.timeout, progress=StderrProgress()
                )
                await controller.deploy(first_sync_timeout=args.timeout)
            return pair

    print_pair(asyncio.run(run()))
    return 0


def controller_for(
    args: argparse.Namespace, pair: Pair, gpu: VastInstance, standby: StandbyVm
) -> SyncController:
    """Sync between the pair's machines: root on the GPU, the spec's user on the standby."""
    from provisioning.cli_sync import topology_from_args
    from provisioning.pairing import PairSpec

    spec = PairSpec.from_json(pair.spec)
    gpu_host = SshHost(gpu.ssh_host, "root", gpu.ssh_port)
    standby_host = SshHost(standby.external_ip, spec.standby_user, args.standby_ssh_port)
    topology = topology_from_args(args, gpu=gpu_host, standby=standby_host)
    return SyncController(topology, progress=StderrProgress())


def _destroy(args: argparse.Namespace) -> int:
    async def run() -> Pair:
        async with service_from_args(args) as service:
            return await service.destroy(args.pair)

    print_pair(asyncio.run(run()))
    return 0


def _list(args: argparse.Namespace) -> int:
    for pair in PairStore(Path(args.store)).list(include_destroyed=args.all):
        print_pair(pair)
    return 0


def _show(args: argparse.Namespace) -> int:
    store = PairStore(Path(args.store))
    pair = store.get(args.pair)
    print_pair(pair)
    for event in store.events(pair.id):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at))
        print(f"  {stamp}Z {event.kind} {event.detail}".rstrip())
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    async def run() -> list[str]:
        async with service_from_args(args) as service:
            missing = await _missing_standbys(service, args)
            repairs = await service.reconcile(
                args.pair, rollback=args.rollback, delete_orphans=args.delete_orphans
            )
            for pair_id in missing:  # restarted or recreated by now: the alert clears
                await _report_standby(args, "present", f"standby of {pair_id} back")
            return [str(r) for r in repairs]

    repairs = asyncio.run(run())
    for line in repairs:
        print(line)
    if not repairs:
        print("nothing to repair")
    return 0


async def _missing_standbys(service: PairService, args: argparse.Namespace) -> list[str]:
    """Pairs whose spot standby was preempted (stopped) or deleted, as the Compute API says: the
    proxy is told first (dumont_standby_presence, the dashboard), then reconcile restarts it."""
    from provisioning.store import PairState

    pairs = [service.store.get(args.pair)] if args.pair else service.store.list()
    missing = []
    for pair in pairs:
        if pair.state in (PairState.CREATING, PairState.DESTROYING, PairState.DESTROYED):
            continue
        vm = await service.standbys.find(pair.standby_name)
        if vm is None or vm.stopped:
            what = "deleted" if vm is None else f"{vm.status} (preempted)"
            StderrProgress()(f"standby {pair.standby_name} is {what}: restarting it")
            await _report_standby(args, "missing", f"standby {pair.standby_name} is {what}")
            missing.append(pair.id)
    return missing


async def _report_standby(args: argparse.Namespace, state: str, detail: str) -> None:
    from provisioning.errors import ProxyAdminError
    from provisioning.proxy_admin import report_park

    if not args.proxy_control:
        return
    try:
        await report_park(args.proxy_control, args.admin_token or "", None, standby=state)
    except ProxyAdminError as exc:
        StderrProgress()(f"warning: {detail}, not reported to the proxy: {exc}")


def replacement_filler(args: argparse.Namespace) -> Filler:
    """The replacement workflow (provisioning/replacement.py) with this command's settings."""
    snapshots = None
    if args.snapshot_destination:

        def snapshots_for(gpu: SshHost) -> RemoteSnapshots:
            return remote_snapshots_from_args(args, gpu)

        snapshots = snapshots_for
    plan = ReplacementPlan(
        code_server_port=args.code_server_port,
        timeout=args.timeout,
        proxy_control=args.proxy_control,
        admin_token=args.admin_token or "",
        snapshots=snapshots,
    )

    def controller(pair: Pair, gpu: VastInstance, standby: StandbyVm) -> SyncController:
        return controller_for(args, pair, gpu, standby)

    return fill_replacement(controller, plan, StderrProgress())


def _gpu_lost(args: argparse.Namespace) -> int:
    from provisioning.parking import PLANNED_CAUSES, PLANNED_REASONS

    # The proxy's on_failover hook also runs after a planned switch (park, switchover): the GPU
    # is fine, and the planner owns what happens next. The hook's DUMONT_CAUSE says so; a reason
    # given by hand (or by a proxy that sets no cause) says so by its prefix.
    cause = "" if args.reason else os.environ.get("DUMONT_CAUSE", "")
    planned = args.reason or os.environ.get("DUMONT_REASON", "")
    if cause in PLANNED_CAUSES or (not cause and planned.startswith(PLANNED_REASONS)):
        print(f"planned switch ({planned or cause}): the GPU is not lost, nothing to do")
        return 0

    async def run() -> tuple[Pair, str]:
        async with service_from_args(args) as service:
            verdict = await service.check_gpu(args.pair, proxy_says_down=True)
            # The proxy runs hooks with DUMONT_REASON set: the health view that triggered failover.
            reason = args.reason or os.environ.get("DUMONT_REASON") or verdict.reason
            fill = replacement_filler(args) if args.replace else None
            pair = await service.gpu_lost(args.pair, reason=reason, replace=args.replace, fill=fill)
            return pair, verdict.reason

    pair, verdict = asyncio.run(run())
    print(f"{verdict}")
    print_pair(pair)
    return 0


def add_pair_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from provisioning.cli_sync import add_snapshot_options, add_sync_options

    pair = subparsers.add_parser("pair", help="GPU <-> CPU standby pairs")
    actions = pair.add_subparsers(dest="pair_action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="rent a GPU, then its standby VM (idempotent)")
    create.add_argument("--pair", required=True, help="pair id, e.g. alice-1")
    add_options(
        create,
        "gpu_name",
        "num_gpus",
        "gpu_query",
        "image",
        "disk",
        "max_price",
        "ssh_public_key",
        "standby_user",
        "termination_action",
    )
    create.add_argument(
        "--deploy-sync",
        action="store_true",
        help="then wait for the standby's start-up script and deploy and start the sync",
    )
    add_options(create, "standby_ssh_port")
    add_sync_options(create, with_hosts=False)
    create.set_defaults(handler=_create)

    destroy = actions.add_parser("destroy", help="user intent: destroy the GPU and the standby")
    destroy.add_argument("--pair", required=True)
    destroy.set_defaults(handler=_destroy)

    listing = actions.add_parser("list", help="pairs in the store")
    listing.add_argument("--all", action="store_true", help="include destroyed pairs")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one pair and its history")
    show.add_argument("--pair", required=True)
    show.set_defaults(handler=_show)

    reconcile = actions.add_parser("reconcile", help="compare store and clouds; repair")
    reconcile.add_argument("--pair", help="only this pair")
    reconcile.add_argument("--rollback", action="store_true", help="destroy half-created pairs")
    reconcile.add_argument(
        "--delete-orphans", action="store_true", help="delete labelled machines the store lacks"
    )
    add_options(reconcile, "proxy_control", "admin_token")
    reconcile.set_defaults(handler=_reconcile)

    lost = actions.add_parser("gpu-lost", help="spot interruption: keep the standby, degrade")
    lost.add_argument("--pair", required=True)
    add_options(lost, "reason")
    lost.add_argument("--replace", action="store_true", help="rent a replacement GPU and fill it")
    add_options(lost, "standby_ssh_port", "code_server_port")
    add_sync_options(lost, with_hosts=False)
    add_snapshot_options(lost)
    lost.set_defaults(handler=_gpu_lost)

    for parser in (create, destroy, reconcile, lost):
        add_cloud_options(parser)

    from provisioning.cli_park import add_park_verbs  # it builds on this module's helpers

    add_park_verbs(actions)
