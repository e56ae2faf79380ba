"""GPU -> standby sync with lsyncd: deploy, start, stop, status, fence, reverse.

The GPU runs lsyncd (rsyncssh) and pushes every root to the standby with its own *sync key*, which
the standby accepts only through the fence gate (provisioning.fence). Under systemd lsyncd runs as
the ``dumont-lsyncd`` unit; without it (Vast's containers have none) it runs as its own session,
``setsid lsyncd -nodaemon``, with its pid (= process group id) in the state dir.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from provisioning import editor_backups
from provisioning.errors import RemoteCommandError, SyncError
from provisioning.fence import fence_standby, install_gate, is_fenced
from provisioning.lsyncd_config import (
    USER_DATA_EXCLUDES,
    WORKSPACE_EXCLUDES,
    LsyncdSettings,
    SyncRoot,
    render_lsyncd_config,
)
from provisioning.lsyncd_status import LsyncdReport, parse_lsyncd
from provisioning.progress import Progress, quiet
from provisioning.ssh import SshHost, run_remote

__all__ = [
    "FenceReport",
    "SyncController",
    "SyncStatus",
    "SyncTopology",
    "for_each_root",
    "systemd_unit",
    "topology_roots",
]

UNIT_NAME = "dumont-lsyncd.service"
_REPO_UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / UNIT_NAME
PROBE_NAME = ".dumont-sync-probe"

# ssh's connect (and banner) timeout for stopping the GPU's lsyncd at fence time.
GPU_STOP_CONNECT_S = 1.0


def systemd_unit(settings: LsyncdSettings) -> str:
    """The unit text: deploy/systemd's (hardened, fixed to /var/lib/dumont) when it applies."""
    if _REPO_UNIT.is_file() and settings.state_dir == "/var/lib/dumont":
        return _REPO_UNIT.read_text()
    return "\n".join(
        [
            "[Unit]",
            "Description=Dumont GPU -> standby file sync (lsyncd)",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            f"ExecStart=/usr/bin/lsyncd -nodaemon {settings.config_path}",
            # insist = true keeps lsyncd up while the standby is away; an exit is a real failure
            # (inotify watches exhausted), restarted but visible in `sync status`.
            "Restart=on-failure",
            "RestartSec=5",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


@dataclass(frozen=True)
class SyncTopology:
    """Who syncs to whom, and where everything lives."""

    gpu: SshHost  # admin access to the GPU from the control host
    standby: SshHost  # admin access to the standby from the control host
    standby_from_gpu: SshHost  # the standby as the GPU's lsyncd reaches it (key: the sync key)
    roots: tuple[SyncRoot, ...]
    settings: LsyncdSettings
    standby_state_dir: str = "/var/lib/dumont"
    standby_authorized_keys: str = ".ssh/authorized_keys"  # relative: in the sync user's home

    @property
    def sync_target(self) -> SshHost:
        return self.standby_from_gpu.with_key(self.settings.sync_key_path)

    def shared_rsh(self) -> str:
        """rsync's ``-e`` from the GPU to the standby over lsyncd's shared connection (or a new
        master the next call shares): a pass and its verify then cost one session each, not one
        key exchange each. The standby's gate still runs for every session."""
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.settings.control_path}"]
        return shlex.join([*shlex.split(self.sync_target.rsh()), *mux, "-o", "ControlPersist=60"])


@dataclass(frozen=True)
class SyncStatus:
    lsyncd: LsyncdReport
    fenced: bool
    lag_seconds: float | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class FenceReport:
    gpu_stopped: bool
    gpu_error: str = ""
    stale_editor_backups: tuple[str, ...] = ()  # files whose stale hot-exit backup was dropped
    backups_error: str = ""


class SyncController:
    def __init__(self, topology: SyncTopology, *, progress: Progress | None = None) -> None:
        self.topology = topology
        self._progress = progress or quiet

    # -- deploy and run ----------------------------------------------------------------------

    async def deploy(self, *, start: bool = True, first_sync_timeout: float = 3600.0) -> None:
        """Install the gate on the standby, the key and config on the GPU; optionally start."""
        t, s = self.topology, self.topology.settings
        q = shlex.quote
        self._progress(f"preparing standby {t.standby.describe()}")
        dirs = " ".join(q(r.standby_path) for r in t.roots)
        await run_remote(t.standby, f"mkdir -p {q(t.standby_state_dir)} {dirs}")
        self._progress(f"preparing GPU {t.gpu.describe()}")
        key = q(s.sync_key_path)
        public_key = await run_remote(
            t.gpu,
            f"set -e; mkdir -p {q(s.state_dir)}; [ -f {key} ] ||"
            f" ssh-keygen -q -t ed25519 -N '' -C dumont-sync -f {key}; cat {key}.pub",
        )
        await install_gate(
            t.standby, t.standby_state_dir, t.standby_authorized_keys, public_key.strip()
        )
        config = render_lsyncd_config(t.roots, t.sync_target, s)
        await run_remote(
            t.gpu,
            f"cat > {q(s.config_path)}.tmp && mv {q(s.config_path)}.tmp {q(s.config_path)}",
            stdin=config.encode(),
        )
        if await self._has_systemd():
            unit = f"/etc/systemd/system/{UNIT_NAME}"
            await run_remote(
                t.gpu,
                f"cat > {unit} && systemctl daemon-reload",
                stdin=systemd_unit(s).encode(),
            )
        if start:
            await self.start()
            await self.wait_first_sync(timeout=first_sync_timeout)

    async def start(self) -> None:
        """(Re)start lsyncd on the GPU."""
        s, q = self.topology.settings, shlex.quote
        await self.stop()
        if await self._has_systemd():
            await run_remote(self.topology.gpu, f"systemctl enable --now {UNIT_NAME}")
            return
        # A killed ssh master leaves its socket behind, and ssh then silently stops sharing the
        # connection ("ControlSocket already exists"): remove sockets whose master is gone.
        sockets = s.control_path.replace("%C", "*")
        prune = (
            f'for s in {sockets}; do [ -S "$s" ] || continue;'
            ' ssh -o ControlPath="$s" -O check unused 2>/dev/null || rm -f "$s"; done'
        )
        # Not a process-group leader in a non-interactive shell, so setsid execs lsyncd in place:
        # $! is lsyncd's pid and its process group id.
        await run_remote(
            self.topology.gpu,
            f"{prune}; setsid lsyncd -nodaemon {q(s.config_path)} </dev/null"
            f" >>{q(s.log_path)}.out 2>&1 & echo $! > {q(s.pid_path)}",
        )

    async def stop(self, *, timeout: float = 30.0) -> None:
        """Stop lsyncd on the GPU and wait until it is gone."""
        s, q = self.topology.settings, shlex.quote
        if await self._has_systemd(timeout=timeout):
            await run_remote(self.topology.gpu, f"systemctl stop {UNIT_NAME}", timeout=timeout)
            return
        pid = q(s.pid_path)
        # The pid file outlives a crash or a reboot of the GPU, and its number may since belong to
        # anything (the user's training job): kill that group only while the pid is still our
        # lsyncd, running our config.
        ours = _is_our_lsyncd("$p", s.config_path)
        await run_remote(
            self.topology.gpu,
            f"[ -f {pid} ] || exit 0; p=$(cat {pid});"
            f' case "$p" in ""|*[!0-9]*) rm -f {pid}; exit 0;; esac;'
            f" if {ours}; then kill -TERM -- -$p 2>/dev/null || true;"
            " for i in $(seq 50); do kill -0 $p 2>/dev/null || break; sleep 0.1; done;"
            f" {ours} && kill -KILL -- -$p 2>/dev/null; fi; rm -f {pid}",
            timeout=timeout,
        )

    async def wait_first_sync(self, *, timeout: float) -> LsyncdReport:
        """Block until every root's startup full sync finished, reporting progress."""
        deadline = time.monotonic() + timeout
        shown, failing = -1, 0
        while True:
            report = await self.lsyncd_report()
            if report.startups_finished >= len(self.topology.roots):
                self._progress("first full sync done")
                return report
            if not report.running:
                # An exit is final (inotify watches, a bad config); rsync failures are retried by
                # lsyncd itself (insist) and only reported until the timeout.
                fatal = [p for p in report.problems if "first full sync" not in p]
                raise SyncError(f"first full sync failed: {'; '.join(fatal)}")
            if report.failing_retries and report.failing_retries != failing:
                failing = report.failing_retries
                self._progress(f"first full sync: rsync failed {failing} times, lsyncd retries")
            if report.startups_finished != shown:
                shown = report.startups_finished
                done = f"{shown} of {len(self.topology.roots)}"
                self._progress(f"first full sync: {done} roots done")
            if time.monotonic() > deadline:
                raise SyncError(f"first full sync not done after {timeout:g} s")
            await asyncio.sleep(0.5)

    # -- observe -----------------------------------------------------------------------------

    async def lsyncd_report(self) -> LsyncdReport:
        s, q = self.topology.settings, shlex.quote
        marker = "@@dumont-status@@"
        systemd_check = f"systemctl is-active --quiet {UNIT_NAME}"
        # A pid alone proves nothing after a crash: the number may be another process by now.
        pid_check = f"[ -f {q(s.pid_path)} ] && " + _is_our_lsyncd(
            f"$(cat {q(s.pid_path)})", s.config_path
        )
        out = await run_remote(
            self.topology.gpu,
            f"if [ -d /run/systemd/system ]; then {systemd_check}; else {pid_check}; fi"
            f" && echo running || echo stopped; echo {marker};"
            f" cat {q(s.status_path)} 2>/dev/null; echo {marker};"
            f" tail -n 2000 {q(s.log_path)} 2>/dev/null; echo {marker};"
            f" tail -n 20 {q(s.log_path)}.out 2>/dev/null || true",
        )
        state, status_text, log_text, console = [*out.split(f"{marker}\n", 3), "", "", ""][:4]
        return parse_lsyncd(
            running=state.strip() == "running",
            status_text=status_text,
            log_text=log_text,
            console_text=console,
            roots=len(self.topology.roots),
        )

    async def status(self, *, probe: bool = True, probe_timeout: float = 30.0) -> SyncStatus:
        t = self.topology
        report = await self.lsyncd_report()
        fenced = await is_fenced(t.standby, t.standby_state_dir)
        problems = list(report.problems)
        if fenced:
            problems.append("the standby is fenced: the GPU's writes are refused")
        lag: float | None = None
        if probe and report.running and not fenced:
            try:
                lag = await self.probe_lag(timeout=probe_timeout)
            except SyncError as exc:
                problems.append(str(exc))
        return SyncStatus(report, fenced, lag, tuple(dict.fromkeys(problems)))

    async def probe_lag(self, *, timeout: float = 30.0) -> float:
        """Write a nonce on the GPU and time its arrival on the standby (an upper bound)."""
        t, q = self.topology, shlex.quote
        root = t.roots[0]
        nonce = secrets.token_hex(8)
        target = q(f"{root.standby_path}/{PROBE_NAME}")
        polls = max(1, int(timeout / 0.05))
        wait_script = (
            f"for i in $(seq {polls}); do grep -qx {nonce} {target} 2>/dev/null && exit 0;"
            " sleep 0.05; done; exit 1"
        )
        write_script = f"echo {nonce} > {q(f'{root.gpu_path}/{PROBE_NAME}')}"
        try:
            # The waiter starts first so the arrival cannot be missed; the group cancels it if the
            # write fails.
            async with asyncio.TaskGroup() as group:
                waiter = group.create_task(
                    run_remote(t.standby, wait_script, timeout=timeout + 15),
                    name="dumont-sync-probe-waiter",
                )
                await run_remote(t.gpu, write_script, timeout=timeout)
                written = time.monotonic()
                await waiter
        except* RemoteCommandError as group_error:
            message = f"sync probe did not arrive within {timeout:g} s"
            raise SyncError(message) from group_error.exceptions[0]
        return time.monotonic() - written

    # -- failover ----------------------------------------------------------------------------

    async def fence(
        self, *, drain_timeout: float = 10.0, fencing_token: int | None = None
    ) -> FenceReport:
        """Fence the standby (must succeed); then, at once, stop lsyncd on the GPU if it answers
        and drop the stale editor backups on the standby (nothing the GPU sends lands now).
        A ``fencing_token`` older than the standby's record is refused before any of it."""
        t = self.topology
        await fence_standby(
            t.standby, t.standby_state_dir, drain_timeout=drain_timeout, fencing_token=fencing_token
        )
        # The proxy's switch waits for this hook, and stopping the GPU's lsyncd is hygiene, not
        # safety (the fence is): a GPU that does not answer ssh's banner within a second (frozen,
        # cut off) is left alone. The continuity run's silent faults spent 3 s here at 3 s.
        quick = SyncController(replace(t, gpu=replace(t.gpu, connect_timeout=GPU_STOP_CONNECT_S)))
        stopped, tidied = await asyncio.gather(
            _outcome(quick.stop(timeout=8.0)), _outcome(self._drop_stale_editor_backups())
        )
        # A dead or partitioned GPU keeps its lsyncd: the fence on the standby protects the files.
        return FenceReport(
            gpu_stopped=not isinstance(stopped, RemoteCommandError),
            gpu_error=str(stopped or ""),
            stale_editor_backups=() if isinstance(tidied, RemoteCommandError) else tidied,
            backups_error=str(tidied) if isinstance(tidied, RemoteCommandError) else "",
        )

    async def _drop_stale_editor_backups(self) -> tuple[str, ...]:
        roots = [r.standby_path for r in self.topology.roots if r.name == "user-data"]
        if not roots:
            return ()
        command = shlex.join(["python3", "-", *roots])
        out = await run_remote(
            self.topology.standby, command, stdin=_EDITOR_BACKUPS_SCRIPT, timeout=20.0
        )
        return tuple(line for line in out.splitlines() if line)

    async def _has_systemd(self, *, timeout: float = 60.0) -> bool:
        out = await run_remote(
            self.topology.gpu, "[ -d /run/systemd/system ] && echo yes || true", timeout=timeout
        )
        return out.strip() == "yes"


def _is_our_lsyncd(pid: str, config_path: str) -> str:
    """Shell test: process ``pid`` (a shell word) is lsyncd running our config."""
    return f"tr '\\0' ' ' </proc/{pid}/cmdline 2>/dev/null | grep -qF -- {shlex.quote(config_path)}"


_T = TypeVar("_T")


async def for_each_root(
    roots: Sequence[SyncRoot], work: Callable[[SyncRoot], Awaitable[_T]]
) -> list[_T]:
    """``work`` on every root concurrently (each is an ssh round trip or two); the first root's
    error is raised once all have finished, so none is left running behind the caller."""
    values: list[_T] = []
    for result in await asyncio.gather(*(work(root) for root in roots), return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        values.append(result)
    return values


# Sent to the standby's python3 at fence time; read once here, not in the failover's path.
_EDITOR_BACKUPS_SCRIPT = Path(editor_backups.__file__).read_bytes()


async def _outcome(work: Awaitable[_T]) -> _T | RemoteCommandError:
    try:
        return await work
    except RemoteCommandError as exc:
        return exc


def topology_roots(
    workspace: str, user_data: str | None, extra_excludes: Sequence[str] = ()
) -> tuple[SyncRoot, ...]:
    """The workspace and, unless None, code-server's user data, each with its excludes."""
    roots = [SyncRoot.parse("workspace", workspace, (*WORKSPACE_EXCLUDES, *extra_excludes))]
    if user_data:
        roots.append(SyncRoot.parse("user-data", user_data, USER_DATA_EXCLUDES))
    return tuple(roots)
