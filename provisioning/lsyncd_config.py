"""The lsyncd configuration the GPU runs: rsyncssh to the standby, one ``sync`` per root.

Why these settings (see docs/PROVISIONING.md):
- ``delay``: lsyncd's default is 15 s, the seed promises 1-2 s: 1 s by default, fractional allowed.
- ``delete = "running"``: deletions made while lsyncd runs are mirrored, but the startup full sync
  never deletes on the standby. A primary that restarts lsyncd with a stale tree therefore cannot
  wipe what the standby wrote; the fence refuses its writes outright anyway.
- ``insist``: a standby that is unreachable at startup (booting, fenced) is retried, not fatal.
- a status file every second, read by ``sync status``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from provisioning.errors import UsageError
from provisioning.ssh import SshHost

__all__ = [
    "USER_DATA_EXCLUDES",
    "WORKSPACE_EXCLUDES",
    "LsyncdSettings",
    "SyncRoot",
    "render_lsyncd_config",
]

DeleteMode = Literal["true", "false", "running", "startup"]

# Caches and sockets: rebuilt on the standby, never worth the bandwidth, and a socket cannot be
# copied meaningfully (rsync -a would recreate it as a dead special file).
WORKSPACE_EXCLUDES = (
    ".cache/",
    "__pycache__/",
    "*.pyc",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "node_modules/.cache/",
    "*.sock",
    "*.socket",
    "*.swp",
)
# code-server's user data dir: keep User/ (settings, keybindings, snippets, globalStorage,
# workspaceStorage), extensions/ and Backups/ (hot exit of unsaved editors); drop logs and caches.
USER_DATA_EXCLUDES = (
    "logs/",
    "CachedData/",
    "CachedExtensionVSIXs/",
    "CachedProfilesData/",
    "CachedConfigurations/",
    "Cache/",
    "GPUCache/",
    "Code Cache/",
    "*.sock",
    "*.socket",
    "*.lock",
    "coder-logs/",
)


@dataclass(frozen=True)
class SyncRoot:
    """One directory kept in sync: where it is on the GPU and where it lands on the standby."""

    name: str
    gpu_path: str
    standby_path: str
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for path in (self.gpu_path, self.standby_path):
            if not path.startswith("/"):
                raise UsageError(f"bad {self.name} path {path!r}: must be absolute")

    @classmethod
    def parse(cls, name: str, value: str, excludes: Sequence[str]) -> SyncRoot:
        """``GPU_PATH[:STANDBY_PATH]`` (the same path on both sides when one is given)."""
        gpu, _, standby = value.partition(":")
        return cls(
            name, gpu.rstrip("/") or "/", (standby or gpu).rstrip("/") or "/", tuple(excludes)
        )


@dataclass(frozen=True)
class LsyncdSettings:
    state_dir: str  # on the GPU: config, log, status file, pid file, sync key
    delay: float = 1.0
    delete: DeleteMode = "running"
    status_interval: int = 1
    max_processes: int = 1  # rsyncssh refuses anything else
    extra_excludes: tuple[str, ...] = field(default=())
    # A unix socket path must stay under 108 bytes, so not in a possibly deep state dir; %C is a
    # hash of (local host, remote host, port, user). Spaces or quotes would break the shell glob
    # that prunes stale sockets.
    control_path: str = "/tmp/.dumont-ssh-%C"

    def __post_init__(self) -> None:
        if not math.isfinite(self.delay) or self.delay <= 0:
            raise UsageError(f"bad sync delay {self.delay!r}: a positive number of seconds")
        if (
            not re.fullmatch(r"/[A-Za-z0-9._/%-]+", self.control_path)
            or len(self.control_path) > 60
        ):
            raise UsageError(f"bad ssh control path {self.control_path!r}: short, absolute, plain")
        if self.delete not in ("true", "false", "running", "startup"):
            raise UsageError(f"bad delete mode {self.delete!r}: true, false, running or startup")

    @property
    def config_path(self) -> str:
        return f"{self.state_dir}/lsyncd.lua"

    @property
    def log_path(self) -> str:
        return f"{self.state_dir}/lsyncd.log"

    @property
    def status_path(self) -> str:
        return f"{self.state_dir}/lsyncd.status"

    @property
    def pid_path(self) -> str:
        return f"{self.state_dir}/lsyncd.pid"

    @property
    def sync_key_path(self) -> str:
        return f"{self.state_dir}/sync_key"


def lua_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _lua_delete(mode: DeleteMode) -> str:
    return mode if mode in ("true", "false") else lua_string(mode)


def render_lsyncd_config(
    roots: Sequence[SyncRoot], standby: SshHost, settings: LsyncdSettings
) -> str:
    """The Lua config; ``standby`` is the standby as the GPU reaches it, keyed with the sync key."""
    if not roots:
        raise UsageError("nothing to sync: give at least one sync root")
    s = settings
    lines = [
        "-- Rendered by dumont-provision: GPU -> standby sync. Edits are overwritten on deploy.",
        "settings {",
        f"    logfile = {lua_string(s.log_path)},",
        f"    statusFile = {lua_string(s.status_path)},",
        f"    statusInterval = {s.status_interval},",
        "    insist = true,",
        f"    maxProcesses = {s.max_processes},",
        "}",
    ]
    ssh_options = {
        "BatchMode": "yes",
        "ServerAliveInterval": "5",
        "ServerAliveCountMax": "3",
        # Every rsync lsyncd starts is a new ssh; sharing one connection saves the key exchange
        # (about half a second on a loaded machine, one or more round trips over a WAN) per sync.
        # The standby's forced command still runs for every session on the shared connection.
        "ControlMaster": "auto",
        "ControlPath": s.control_path,
        "ControlPersist": "60",
    }
    if standby.known_hosts:
        ssh_options |= {
            "StrictHostKeyChecking": "accept-new",
            "UserKnownHostsFile": standby.known_hosts,
        }
    else:
        ssh_options |= {"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null"}
    options = ", ".join(f"{k} = {lua_string(v)}" for k, v in ssh_options.items())
    for root in roots:
        excludes = ", ".join(lua_string(e) for e in (*root.excludes, *s.extra_excludes))
        lines += [
            "sync {",
            "    default.rsyncssh,",
            f"    source = {lua_string(root.gpu_path.rstrip('/') + '/')},",
            f"    host = {lua_string(standby.destination)},",
            f"    targetdir = {lua_string(root.standby_path.rstrip('/') + '/')},",
            f"    delay = {s.delay:g},",
            f"    delete = {_lua_delete(s.delete)},",
            f"    exclude = {{ {excludes} }},",
            # update: a file newer on the standby (written there after a failover, in the moment
            # before the switch home) is never overwritten by the GPU's older copy.
            "    rsync = { archive = true, compress = false, update = true },",
            "    ssh = {",
            f"        port = {standby.port},",
            f"        identityFile = {lua_string(standby.key or s.sync_key_path)},",
            f"        options = {{ {options} }},",
            "    },",
            "}",
        ]
    return "\n".join(lines) + "\n"
