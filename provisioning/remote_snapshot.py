"""Snapshots taken and restored *on the GPU*, driven from the control host over SSH.

A replacement GPU is filled from the latest snapshot of its predecessor's workspace (a bucket is
fast and close; the standby is a small VM on a thin link) and then reverse-synced from the
standby, which then only sends what changed since that snapshot. Both steps have to run where the
disk is, so the snapshot engine travels to the GPU as a zipapp: ``provisioning.snapshot`` and the
two modules it imports, built in memory from this very checkout (so the GPU always runs the same
version as the control host), uploaded over the admin SSH connection and run with the GPU's own
Python. The GPU needs ``zstandard``, ``blake3`` and ``pyfastcdc`` (``httpx`` and ``google-auth``
for ``gs://``); Vast's on-start script installs them (``startup_script.render_gpu_onstart``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import proxy.settings
from provisioning.errors import RemoteCommandError, SnapshotAgentError, SyncError, UsageError
from provisioning.lsyncd_config import SyncRoot
from provisioning.progress import Progress
from provisioning.snapshot.manifest import SnapshotRecord
from provisioning.ssh import SshHost, run_remote
from provisioning.sync import SyncTopology

__all__ = [
    "GPU_SNAPSHOT_PACKAGES",
    "RemoteSnapshots",
    "agent_archive",
    "fill_from_snapshot",
    "workspace_root",
]

PACKAGE_ROOT = Path(__file__).resolve().parent
SETTINGS_ROOT = Path(proxy.settings.__file__).resolve().parent
# What `python -m provisioning.snapshot` imports from outside its own package.
_AGENT_MODULES = ("__init__.py", "errors.py", "retry.py")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed stamps: the same sources give the same archive
_MAIN = "import sys\nfrom provisioning.snapshot.__main__ import main\nsys.exit(main())\n"
GPU_SNAPSHOT_PACKAGES = ("zstandard", "blake3", "pyfastcdc", "httpx", "google-auth")


@cache
def agent_archive() -> bytes:
    """The snapshot engine as a runnable zipapp (``python agent.pyz create|list|restore ...``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, data: bytes) -> None:
            archive.writestr(zipfile.ZipInfo(name, _ZIP_EPOCH), data, zipfile.ZIP_DEFLATED)

        add("__main__.py", _MAIN.encode())
        for module in _AGENT_MODULES:
            add(f"provisioning/{module}", (PACKAGE_ROOT / module).read_bytes())
        for path in sorted((PACKAGE_ROOT / "snapshot").rglob("*.py")):
            add(f"provisioning/{path.relative_to(PACKAGE_ROOT).as_posix()}", path.read_bytes())
        # The snapshot verbs read their settings through the shared settings layer, which
        # imports nothing else of the proxy (proxy/__init__.py is empty).
        add("proxy/__init__.py", (SETTINGS_ROOT.parent / "__init__.py").read_bytes())
        for path in sorted(SETTINGS_ROOT.glob("*.py")):
            add(f"proxy/settings/{path.name}", path.read_bytes())
    return buffer.getvalue()


@dataclass(frozen=True)
class RemoteSnapshots:
    """The snapshot verbs on one remote host.

    ``env`` is prefixed to every command (``GOOGLE_APPLICATION_CREDENTIALS=/path`` for a bucket,
    ``STORAGE_EMULATOR_HOST`` in tests): paths and endpoints, never secrets, since a command line
    is visible in the remote process list.
    """

    host: SshHost
    destination: str
    python: str = "python3"
    state_dir: str = "/var/lib/dumont"
    env: tuple[str, ...] = ()
    timeout: float = 3600.0

    @property
    def agent_path(self) -> str:
        digest = hashlib.sha256(agent_archive()).hexdigest()[:12]
        return f"{self.state_dir.rstrip('/')}/dumont-snapshot-{digest}.pyz"

    async def install(self) -> None:
        """Upload the engine (atomically, so two runs never see half a file) and check its deps."""
        path = shlex.quote(self.agent_path)
        upload = (
            f"mkdir -p {shlex.quote(self.state_dir)} && cat > {path}.$$ && mv -f {path}.$$ {path}"
        )
        try:
            await run_remote(self.host, upload, stdin=agent_archive(), timeout=120)
            await self._run(["list", "--help"], timeout=120)
        except RemoteCommandError as exc:
            install = shlex.join([self.python, "-m", "pip", "install", *GPU_SNAPSHOT_PACKAGES])
            raise SnapshotAgentError(
                f"cannot run snapshots on {self.host.describe()} ({exc}); "
                f"it needs Python 3.11+ and: {install}"
            ) from exc

    async def snapshots(self) -> list[SnapshotRecord]:
        """Every snapshot at the destination as the remote host sees it, oldest first."""
        out = await self._run(["list", "--json", *self._destination()], timeout=300)
        return [SnapshotRecord.from_bytes(json.dumps(raw).encode()) for raw in json.loads(out)]

    async def latest(self, source: str) -> SnapshotRecord | None:
        """The newest snapshot of ``source`` (None: there is none yet, or no repository)."""
        try:
            records = await self.snapshots()
        except RemoteCommandError as exc:
            if "no snapshot repository" in exc.stderr:
                return None
            raise
        mine = [r for r in records if r.source.rstrip("/") == source.rstrip("/")]
        return mine[-1] if mine else None

    async def create(self, source: str, *, excludes: tuple[str, ...] = ()) -> str:
        """Snapshot ``source`` on the remote host; returns the engine's one-line summary."""
        argv = ["create", source, *self._destination(), "--no-progress"]
        argv += [f"--exclude={pattern}" for pattern in excludes]
        return (await self._run(argv, timeout=self.timeout)).strip()

    async def prune(self, keep: int) -> str:
        argv = ["prune", *self._destination(), f"--keep={keep}"]
        return (await self._run(argv, timeout=self.timeout)).strip()

    async def restore(self, snapshot_id: str, target: str) -> str:
        """Restore into ``target``, replacing what collides (the reverse sync that follows
        mirrors the standby anyway); returns the engine's one-line summary."""
        argv = ["restore", snapshot_id, target, *self._destination(), "--overwrite"]
        return (await self._run([*argv, "--no-progress"], timeout=self.timeout)).strip()

    def _destination(self) -> list[str]:
        return [f"--destination={self.destination}"]

    async def _run(self, argv: list[str], *, timeout: float) -> str:
        command = shlex.join([self.python, self.agent_path, *argv])
        if self.env:
            command = "env " + shlex.join(self.env) + " " + command
        return await run_remote(self.host, command, timeout=timeout)


def workspace_root(topology: SyncTopology) -> SyncRoot:
    """The synced root that snapshots cover (code-server's user data is small: sync carries it)."""
    for root in topology.roots:
        if root.name == "workspace":
            return root
    raise UsageError("no workspace root in the sync topology")


async def fill_from_snapshot(
    remote: RemoteSnapshots, topology: SyncTopology, progress: Progress
) -> SnapshotRecord | None:
    """Restore the newest snapshot of the workspace onto a fresh GPU; None if none was restored.

    Only an accelerator: the reverse sync that must follow makes the GPU an exact, verified mirror
    of the standby whatever this left behind, so a missing or damaged snapshot is reported and the
    standby then sends everything, as it would without snapshots.
    """
    root = workspace_root(topology)
    try:
        await remote.install()
        record = await remote.latest(root.gpu_path)
        if record is None:
            progress(f"no snapshot of {root.gpu_path} yet: the standby sends everything")
            return None
        progress(f"restoring snapshot {record.id} ({record.time}, {record.size} bytes) on the GPU")
        progress(await remote.restore(record.id, root.gpu_path))
    except SyncError as exc:
        progress(f"snapshot not restored, the standby sends everything instead: {exc}")
        return None
    return record
