"""``dumont-provision sync ...``: the verbs an operator and the proxy's hooks call.

Every parameter is a flag (or ``DUMONT_PROVISION_<KEY>``, or the config file: see
provisioning/settings.py), so a hook line is complete by itself; docs/PROVISIONING.md lists the
exact hook command lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict

from provisioning.errors import (
    ProvisioningError,
    ProxyAdminError,
    StaleFencingToken,
    UsageError,
)
from provisioning.fence import claim_fencing_token
from provisioning.fencing_token import ENV_VAR, fencing_token_from
from provisioning.lsyncd_config import LsyncdSettings, render_lsyncd_config
from provisioning.progress import StderrProgress
from provisioning.proxy_admin import SyncState, report_sync
from provisioning.remote_snapshot import RemoteSnapshots, workspace_root
from provisioning.reverse_sync import reverse_sync
from provisioning.settings import add_options
from provisioning.ssh import SshHost
from provisioning.sync import SyncController, SyncStatus, SyncTopology, topology_roots

__all__ = [
    "SNAPSHOT_OPTIONS",
    "SYNC_HOSTS",
    "SYNC_OPTIONS",
    "add_snapshot_options",
    "add_sync_options",
    "add_sync_subcommand",
    "remote_snapshots_from_args",
    "topology_from_args",
]


SYNC_HOSTS = ("gpu", "standby", "standby_from_gpu")
SYNC_OPTIONS = (
    "sync_user",
    "key",
    "known_hosts",
    "workspace",
    "user_data",
    "gpu_state_dir",
    "standby_state_dir",
    "standby_authorized_keys",
    "delay",
    "delete",
    "exclude",
    "ssh_control_path",
    "timeout",
    "proxy_control",
    "admin_token",
)
SNAPSHOT_OPTIONS = ("snapshot_destination", "gpu_python", "gpu_env")


def add_sync_options(parser: argparse.ArgumentParser, *, with_hosts: bool = True) -> None:
    add_options(parser, *(SYNC_HOSTS if with_hosts else ()), *SYNC_OPTIONS)


def add_snapshot_options(parser: argparse.ArgumentParser) -> None:
    """Where the GPU keeps workspace snapshots and how it runs the snapshot engine."""
    add_options(parser, *SNAPSHOT_OPTIONS)


def remote_snapshots_from_args(args: argparse.Namespace, gpu: SshHost) -> RemoteSnapshots:
    if not args.snapshot_destination:
        raise UsageError("missing --snapshot-destination: where the GPU keeps its snapshots")
    bad = [item for item in args.gpu_env or () if "=" not in item or item.startswith("=")]
    if bad:
        raise UsageError(f"bad --gpu-env {bad[0]!r}: expected NAME=VALUE")
    return RemoteSnapshots(
        gpu,
        args.snapshot_destination,
        python=args.gpu_python,
        state_dir=args.gpu_state_dir,
        env=tuple(args.gpu_env or ()),
        timeout=args.timeout,
    )


def topology_from_args(
    args: argparse.Namespace, *, gpu: SshHost | None = None, standby: SshHost | None = None
) -> SyncTopology:
    key = args.key
    if gpu is None:
        if not args.gpu:
            raise UsageError("missing --gpu: the GPU's SSH address")
        gpu = SshHost.parse(args.gpu, key=key, what="--gpu")
    if standby is None:
        if not args.standby:
            raise UsageError("missing --standby: the standby's SSH address")
        standby = SshHost.parse(args.standby, key=key, what="--standby")
    from_gpu_address = getattr(args, "standby_from_gpu", None)
    from_gpu = (
        SshHost.parse(from_gpu_address, what="--standby-from-gpu") if from_gpu_address else standby
    )
    from_gpu = SshHost(
        host=from_gpu.host,
        user=args.sync_user or from_gpu.user,
        port=from_gpu.port,
        known_hosts=args.known_hosts,
    )
    gpu = SshHost(gpu.host, gpu.user, gpu.port, key, args.known_hosts)
    standby = SshHost(standby.host, standby.user, standby.port, key, args.known_hosts)
    user_data = None if str(args.user_data).lower() == "none" else args.user_data
    return SyncTopology(
        gpu=gpu,
        standby=standby,
        standby_from_gpu=from_gpu,
        roots=topology_roots(args.workspace, user_data),
        settings=LsyncdSettings(
            state_dir=args.gpu_state_dir,
            delay=args.delay,
            delete=args.delete,
            extra_excludes=tuple(args.exclude or ()),
            control_path=args.ssh_control_path,
        ),
        standby_state_dir=args.standby_state_dir,
        standby_authorized_keys=args.standby_authorized_keys,
    )


def _controller(args: argparse.Namespace) -> SyncController:
    return SyncController(topology_from_args(args), progress=StderrProgress())


def _render(args: argparse.Namespace) -> int:
    t = topology_from_args(args)
    sys.stdout.write(render_lsyncd_config(t.roots, t.sync_target, t.settings))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    controller = _controller(args)
    asyncio.run(controller.deploy(start=not args.no_start, first_sync_timeout=args.timeout))
    print(f"sync deployed on {controller.topology.gpu.describe()}")
    return 0


def _proxy_state(status: SyncStatus) -> SyncState:
    """The sync as the proxy's dashboard and alerts name it (docs/OBSERVABILITY.md)."""
    if status.fenced:
        return "fenced"
    if not status.lsyncd.running:
        return "stopped"
    return "degraded" if status.problems else "syncing"


def _tell_proxy(args: argparse.Namespace, state: SyncState, lag: float | None = None) -> None:
    """Best effort: the sync's own job (a fence, a reverse sync) never fails for the dashboard.
    Run as a proxy hook, the report goes to the workspace the hook is for (DUMONT_WORKSPACE)."""
    if not args.proxy_control:
        return
    named = os.environ.get("DUMONT_WORKSPACE")
    workspace = None if named in (None, "", "default") else named
    try:
        asyncio.run(
            report_sync(args.proxy_control, args.admin_token or "", state, lag, workspace=workspace)
        )
    except ProxyAdminError as exc:
        print(f"warning: sync state not reported to the proxy: {exc}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    status = asyncio.run(_controller(args).status(probe=not args.no_probe))
    _tell_proxy(args, _proxy_state(status), status.lag_seconds)
    if args.json:
        print(json.dumps(asdict(status) | {"healthy": status.healthy}, indent=2))
    else:
        r = status.lsyncd
        print(f"lsyncd:   {'running' if r.running else 'STOPPED'}")
        print(f"fenced:   {'yes' if status.fenced else 'no'}")
        print(f"pending:  {r.pending_delays} events, {r.watched_directories} dirs watched")
        lag = f"{status.lag_seconds:.2f} s" if status.lag_seconds is not None else "not measured"
        print(f"lag:      {lag}")
        for problem in status.problems:
            print(f"problem:  {problem}")
    return 0 if status.healthy else 1


def _fencing_token(args: argparse.Namespace) -> int | None:
    """Read before anything else, so a malformed token stops the verb with nothing touched."""
    return fencing_token_from(args.fencing_token, os.environ)


def _fence(args: argparse.Namespace) -> int:
    token = _fencing_token(args)
    report = asyncio.run(
        _controller(args).fence(drain_timeout=args.drain_timeout, fencing_token=token)
    )
    print("standby fenced: the old primary's writes are refused")
    _tell_proxy(args, "fenced")
    if report.gpu_stopped:
        print("lsyncd stopped on the GPU")
    else:
        print(f"GPU not reached, lsyncd not stopped (the fence holds): {report.gpu_error}")
    for path in report.stale_editor_backups:
        print(f"dropped a stale editor backup of {path} (identical to the file)")
    if report.backups_error:
        print(f"editor backups not checked: {report.backups_error}")
    return 0


def _flush(args: argparse.Namespace) -> int:
    """The proxy's switchover hook: final pass, verify, fence. Non-zero keeps the GPU serving."""
    from provisioning.flush import flush_to_standby

    token = _fencing_token(args)
    progress = StderrProgress()
    controller = SyncController(topology_from_args(args), progress=progress)

    async def run() -> None:
        report = await flush_to_standby(
            controller, progress=progress, timeout=args.timeout, fencing_token=token
        )
        await controller.fence(drain_timeout=args.drain_timeout, fencing_token=token)
        print(
            f"standby verified and fenced: {report.files_copied} files, {report.bytes_copied}"
            f" bytes in the final pass ({report.passes} passes, {report.seconds:.1f} s)"
        )

    asyncio.run(run())
    _tell_proxy(args, "fenced")
    return 0


def _unfence(args: argparse.Namespace) -> int:
    from provisioning.fence import unfence_standby

    token = _fencing_token(args)
    t = topology_from_args(args)
    asyncio.run(unfence_standby(t.standby, t.standby_state_dir, fencing_token=token))
    print("fence lifted: the standby accepts the GPU's sync again")
    return 0


def _reverse(args: argparse.Namespace) -> int:
    token = _fencing_token(args)
    progress = StderrProgress()
    controller = SyncController(topology_from_args(args), progress=progress)
    t = controller.topology
    if token is not None:
        # Refused here, a deposed leader's failback does not even reach the dashboard.
        asyncio.run(claim_fencing_token(t.standby, t.standby_state_dir, token))
    _tell_proxy(args, "reverse_syncing")
    try:
        report = asyncio.run(
            reverse_sync(
                controller, progress=progress, first_sync_timeout=args.timeout, fencing_token=token
            )
        )
    except StaleFencingToken:
        raise  # a newer leader acts on this standby now: its reports stand, not ours
    except ProvisioningError:
        _tell_proxy(args, "fenced")  # failback abandoned: the standby serves, still fenced
        raise
    _tell_proxy(args, "syncing")
    print(
        f"reverse sync verified for {report.roots} roots in {report.seconds:.1f} s"
        f" ({report.files_copied} files, {report.bytes_copied} bytes copied);"
        f" the primary's replaced files are kept in {report.backup_dir}"
    )
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    t = topology_from_args(args)
    remote = remote_snapshots_from_args(args, t.gpu)
    root = workspace_root(t)
    excludes = tuple(p.rstrip("/") for p in (*root.excludes, *t.settings.extra_excludes))

    async def run() -> list[str]:
        await remote.install()
        lines = [await remote.create(root.gpu_path, excludes=excludes)]
        if args.keep:
            lines.append(await remote.prune(args.keep))
        return lines

    for line in asyncio.run(run()):
        print(line)
    return 0


def add_sync_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = subparsers.add_parser("sync", help="lsyncd GPU -> standby: deploy, status, fence")
    actions = sync.add_subparsers(dest="sync_action", required=True, metavar="ACTION")
    verbs = {
        "render": ("print the lsyncd config the GPU would run", _render),
        "deploy": ("install gate, key and config; start lsyncd; wait for the first sync", _deploy),
        "status": ("lsyncd state, fence, problems and measured lag (exit 1 if unhealthy)", _status),
        "fence": ("refuse the old primary's writes on the standby; stop its lsyncd", _fence),
        "flush": ("planned switchover: final pass to the standby, verify, then fence", _flush),
        "unfence": ("lift the fence on the standby", _unfence),
        "reverse": ("copy the standby to the primary, verify, unfence, restart sync", _reverse),
        "snapshot": ("snapshot the GPU's workspace, run on the GPU", _snapshot),
    }
    for name, (text, handler) in verbs.items():
        parser = actions.add_parser(name, help=text, description=text)
        add_sync_options(parser)
        parser.set_defaults(handler=handler)
        if name == "deploy":
            parser.add_argument("--no-start", action="store_true", help="install only")
        if name == "status":
            parser.add_argument("--no-probe", action="store_true", help="skip the lag probe")
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "snapshot":
            add_snapshot_options(parser)
            parser.add_argument("--keep", type=int, help="then prune to the N latest snapshots")
        if name in ("fence", "flush"):
            add_options(parser, "drain_timeout")
        if name in ("fence", "flush", "unfence", "reverse"):
            # Not a setting: a token belongs to one decision, so it must never sit in a config
            # file (the [provisioning] table refuses the key) or in DUMONT_PROVISION_*.
            parser.add_argument(
                "--fencing-token",
                metavar="N",
                help=f"the proxy leader's decision token (default: ${ENV_VAR}, which the"
                " proxy passes to its hooks); the standby refuses one older than the newest it"
                " has seen (exit 3). Absent: no check",
            )
