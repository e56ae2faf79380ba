"""``dumont-provision pair ...``: create, destroy, list, show, reconcile, gpu-lost.

With ``--proxy-control``, create, destroy and reconcile also keep the pair's workspace at the
proxy (issue 15; provisioning/workspace_registration.py).

google-cloud-compute takes seconds to import, so the cloud modules are imported by the handlers
that need them: the proxy's hooks call ``sync fence`` on failover, and that must start at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.cli_sync import remote_snapshots_from_args
from provisioning.errors import ProvisioningError, UsageError
from provisioning.progress import StderrProgress
from provisioning.remote_snapshot import RemoteSnapshots
from provisioning.replacement import (
    Filler,
    ReplacementPlan,
    primary_url,
    wait_standby_provisioned,
)
from provisioning.replacement import replacement_filler as fill_replacement
from provisioning.settings import add_options
from provisioning.ssh import SshHost
from provisioning.startup_script import render_gpu_onstart, render_startup_script
from provisioning.store import Pair, PairStore
from provisioning.sync import SyncController
from provisioning.vast import VastClient, VastInstance
from provisioning.workspace_registration import (
    DEFAULT_WORKSPACE,
    ProxyWorkspaces,
    Registration,
    check_workspace_name,
    hosts_for,
    reconcile_workspaces,
    standby_url,
)

if TYPE_CHECKING:
    from provisioning.gcp import StandbyVm
    from provisioning.pairing import PairService, PairSpec

__all__ = [
    "CLOUD_OPTIONS",
    "add_cloud_options",
    "add_pair_subcommand",
    "controller_for",
    "pair_name",
    "print_pair",
    "proxy_workspaces",
    "replacement_filler",
    "service_from_args",
    "workspace_of",
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


def pair_name(args: argparse.Namespace) -> str:
    """NAME, or the older ``--pair NAME``."""
    name: str | None = getattr(args, "name", None) or args.pair
    if not name:
        raise UsageError(f"missing pair: dumont-provision pair {args.pair_action} NAME")
    return name


def proxy_workspaces(args: argparse.Namespace) -> ProxyWorkspaces | None:
    """The proxy's workspace endpoints, when this verb was given a control URL."""
    control = getattr(args, "proxy_control", None)
    if not control:
        return None
    # The proxy answers from memory: polling it twice a second costs nothing. A shorter cloud
    # poll interval (tests) shortens this one too.
    interval = min(getattr(args, "poll_interval", 0.5), 0.5)
    return ProxyWorkspaces(
        control, args.admin_token or "", progress=StderrProgress(), poll_interval=interval
    )


def workspace_of(args: argparse.Namespace, pair_id: str) -> str | None:
    """The workspace that the proxy commands about ``pair_id`` address: the pair's own when it is
    registered by name (hosts recorded, or a base domain), else None, the proxy's ``default``
    (a single-workspace proxy, as before issue 15)."""
    if not getattr(args, "proxy_control", None) or pair_id == DEFAULT_WORKSPACE:
        return None
    if getattr(args, "base_domain", None) or PairStore(Path(args.store)).hosts(pair_id):
        return pair_id
    return None


def _unregister_hook(args: argparse.Namespace) -> Callable[[Pair], Awaitable[None]] | None:
    """PairService's ``before_destroy``: the pair's workspace leaves the proxy first. Only a pair
    registered by name is asked about: a pair behind a single-workspace proxy is its
    ``default``, which is the proxy's to keep."""
    proxy = proxy_workspaces(args)
    if proxy is None:
        return None

    async def unregister(pair: Pair) -> None:
        if workspace_of(args, pair.id) is not None:
            await proxy.unregister(pair.id)

    return unregister


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
            before_destroy=_unregister_hook(args),
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

    name = validate_pair_id(pair_name(args))
    spec = _spec_from_args(args)
    proxy = proxy_workspaces(args)
    if args.hosts and proxy is None:
        raise UsageError("--hosts needs --proxy-control: they are the workspace's at the proxy")
    hosts: tuple[str, ...] = ()
    if proxy is not None:  # every check that needs no cloud comes before renting anything
        check_workspace_name(name)
        stored = PairStore(Path(args.store)).hosts(name)
        hosts = hosts_for(name, args.hosts, stored=stored, base_domain=args.base_domain)

    async def run() -> tuple[Pair, str | None]:
        if proxy is not None:
            await proxy.check_hosts_free(name, hosts)
        async with service_from_args(args) as service:
            if proxy is not None:
                service.store.set_hosts(name, hosts)  # the intent, for reconcile after a crash
            pair = await service.create(name, spec)
            if args.deploy_sync:
                gpu, standby = await service.machines(pair.id)
                controller = controller_for(args, pair, gpu, standby)
                await wait_standby_provisioned(
                    controller, timeout=args.timeout, progress=StderrProgress()
                )
                await controller.deploy(first_sync_timeout=args.timeout)
            role = None
            if proxy is not None:
                role = await _register(args, proxy, service, pair, hosts)
            return pair, role

    pair, role = asyncio.run(run())
    print_pair(pair)
    if role is not None:
        print(f"workspace {pair.id}: {', '.join(hosts)} served by the {role}")
    return 0


async def _register(
    args: argparse.Namespace,
    proxy: ProxyWorkspaces,
    service: PairService,
    pair: Pair,
    hosts: tuple[str, ...],
) -> str:
    """The pair's workspace at the proxy, once both machines exist; the role it serves from."""
    gpu, standby = await service.machines(pair.id)
    standby_address = standby_url(standby, args.code_server_port)
    if standby_address is None:
        raise ProvisioningError(
            f"standby {standby.name} has no external IP: workspace {pair.id} not registered"
        )
    wanted = Registration(pair.id, hosts, primary_url(gpu, args.code_server_port), standby_address)
    return await proxy.register(wanted, serve_timeout=args.serve_timeout)


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
    name = pair_name(args)

    async def run() -> Pair:
        async with service_from_args(args) as service:
            return await service.destroy(name)

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
    hosts = store.hosts(pair.id)
    if hosts:
        print(f"  workspace hosts: {', '.join(hosts)}")
    for event in store.events(pair.id):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at))
        print(f"  {stamp}Z {event.kind} {event.detail}".rstrip())
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    only: str | None = args.name or args.pair
    proxy = proxy_workspaces(args)
    if args.prune and proxy is None:
        raise UsageError("--prune needs --proxy-control: it removes workspaces from the proxy")

    async def run() -> tuple[list[str], bool]:
        async with service_from_args(args) as service:
            missing = await _missing_standbys(service, args, only)
            repairs = await service.reconcile(
                only, rollback=args.rollback, delete_orphans=args.delete_orphans
            )
            for pair_id in missing:  # restarted or recreated by now: the alert clears
                await _report_standby(args, pair_id, "present", f"standby of {pair_id} back")
            changes = []
            if proxy is not None:  # after the clouds: the machines it compares are settled
                changes = await reconcile_workspaces(
                    proxy,
                    service,
                    pair_id=only,
                    base_domain=args.base_domain,
                    code_server_port=args.code_server_port,
                    prune=args.prune,
                )
            lines = [str(r) for r in repairs] + [str(c) for c in changes]
            return lines, any(c.problem for c in changes)

    lines, problems = asyncio.run(run())
    for line in lines:
        print(line)
    if not lines:
        print("nothing to repair")
    return 1 if problems else 0


async def _missing_standbys(
    service: PairService, args: argparse.Namespace, only: str | None
) -> list[str]:
    """Pairs whose spot standby was preempted (stopped) or deleted, as the Compute API says: the
    proxy is told first (dumont_standby_presence, the dashboard), then reconcile restarts it."""
    from provisioning.store import PairState

    pairs = [service.store.get(only)] if only else service.store.list()
    missing = []
    for pair in pairs:
        if pair.state in (PairState.CREATING, PairState.DESTROYING, PairState.DESTROYED):
            continue
        vm = await service.standbys.find(pair.standby_name)
        if vm is None or vm.stopped:
            what = "deleted" if vm is None else f"{vm.status} (preempted)"
            StderrProgress()(f"standby {pair.standby_name} is {what}: restarting it")
            await _report_standby(
                args, pair.id, "missing", f"standby {pair.standby_name} is {what}"
            )
            missing.append(pair.id)
    return missing


async def _report_standby(args: argparse.Namespace, pair_id: str, state: str, detail: str) -> None:
    from provisioning.errors import ProxyAdminError
    from provisioning.proxy_admin import report_park

    if not args.proxy_control:
        return
    token = args.admin_token or ""
    workspace = workspace_of(args, pair_id)
    try:
        await report_park(args.proxy_control, token, None, standby=state, workspace=workspace)
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
        workspace=workspace_of(args, pair_name(args)),
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


# What create needs to register the pair's workspace at the proxy (issue 15), besides
# proxy_control and admin_token, which come with the sync options.
WORKSPACE_OPTIONS = ("hosts", "base_domain", "serve_timeout")


def _add_name(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help=help)
    parser.add_argument("--pair", help="the same as NAME")


def add_pair_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from provisioning.cli_sync import add_snapshot_options, add_sync_options

    pair = subparsers.add_parser("pair", help="GPU <-> CPU standby pairs")
    actions = pair.add_subparsers(dest="pair_action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="rent a GPU, then its standby VM; with --proxy-control, register its workspace"
        " and wait until the proxy serves it (idempotent)",
    )
    _add_name(create, "pair id, e.g. alice-1 (also its workspace's name at the proxy)")
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
    add_options(create, "standby_ssh_port", "code_server_port", *WORKSPACE_OPTIONS)
    add_sync_options(create, with_hosts=False)
    create.set_defaults(handler=_create)

    destroy = actions.add_parser(
        "destroy",
        help="user intent: remove the pair's workspace from the proxy, then destroy the GPU and"
        " the standby",
    )
    _add_name(destroy, "the pair")
    add_options(destroy, "proxy_control", "admin_token", "base_domain")
    destroy.set_defaults(handler=_destroy)

    listing = actions.add_parser("list", help="pairs in the store")
    listing.add_argument("--all", action="store_true", help="include destroyed pairs")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one pair and its history")
    show.add_argument("--pair", required=True)
    show.set_defaults(handler=_show)

    reconcile = actions.add_parser(
        "reconcile", help="compare store, clouds and the proxy's workspaces; repair"
    )
    reconcile.add_argument("name", nargs="?", metavar="NAME", help="only this pair")
    reconcile.add_argument("--pair", help="only this pair (same as NAME)")
    reconcile.add_argument("--rollback", action="store_true", help="destroy half-created pairs")
    reconcile.add_argument(
        "--delete-orphans", action="store_true", help="delete labelled machines the store lacks"
    )
    reconcile.add_argument(
        "--prune",
        action="store_true",
        help="remove the proxy's workspaces that no pair in the store accounts for"
        " (never 'default')",
    )
    add_options(reconcile, "proxy_control", "admin_token", "base_domain", "code_server_port")
    reconcile.set_defaults(handler=_reconcile)

    lost = actions.add_parser("gpu-lost", help="spot interruption: keep the standby, degrade")
    lost.add_argument("--pair", required=True)
    add_options(lost, "reason")
    lost.add_argument("--replace", action="store_true", help="rent a replacement GPU and fill it")
    add_options(lost, "standby_ssh_port", "code_server_port", "base_domain")
    add_sync_options(lost, with_hosts=False)
    add_snapshot_options(lost)
    lost.set_defaults(handler=_gpu_lost)

    for parser in (create, destroy, reconcile, lost):
        add_cloud_options(parser)

    from provisioning.cli_park import add_park_verbs  # it builds on this module's helpers

    add_park_verbs(actions)
