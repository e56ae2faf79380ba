"""Real code-server processes for tests: start on an ephemeral loopback port, wait until healthy,
kill loudly (SIGKILL) or silently (SIGSTOP), and always clean up.

    with running_code_server(tmp_path / "gpu", password="pw") as gpu:
        gpu.url         # http://127.0.0.1:<port>
        gpu.freeze()    # SIGSTOP the whole process group: connections hang, nothing answers
        gpu.kill()      # SIGKILL the whole process group: connections are refused

Each instance has its own user-data, extensions and config directories under the given base
directory, runs in its own session (so its process group holds code-server and every child it
spawns: the VS Code server, extension hosts, terminals) and is killed by process-group id, never by
name. The launcher comes from scripts/install-code-server.sh; a missing launcher is an error that
says so, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import signal_group

__all__ = [
    "DEFAULT_HOME",
    "QUIET_SETTINGS",
    "CodeServer",
    "CodeServerError",
    "code_server_pair",
    "find_launcher",
    "healthy",
    "running_code_server",
    "start_code_server",
    "start_code_server_async",
    "titled_settings",
]

DEFAULT_HOME = Path("/opt/dumont/code-server")
HOME_ENV = "DUMONT_CODE_SERVER_HOME"
# code-server logs the address it actually bound, which is how port 0 becomes a known port.
_LISTENING = re.compile(r"HTTP server listening on (http://127\.0\.0\.1:(\d+))/")


# User settings for test instances: no welcome page, no chat panel, no AI features, no update or
# telemetry traffic. They cut the work a 2-core machine does before the explorer shows files
# (measured in docs/CODE-SERVER.md) and change nothing the proxy sees.
QUIET_SETTINGS: dict[str, object] = {
    "workbench.startupEditor": "none",
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "chat.disableAIFeatures": True,
    "chat.commandCenter.enabled": False,
    "workbench.tips.enabled": False,
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "extensions.ignoreRecommendations": True,
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "git.enabled": False,
}


class CodeServerError(RuntimeError):
    """code-server is missing, did not start, or did not become healthy in time."""


def find_launcher() -> Path:
    """The launcher that scripts/install-code-server.sh writes, or an error saying to run it."""
    home = Path(os.environ.get(HOME_ENV, DEFAULT_HOME))
    launcher = home / "bin" / "code-server"
    if not os.access(launcher, os.X_OK):
        raise CodeServerError(
            f"no code-server launcher at {launcher}: run `bash scripts/install-code-server.sh` "
            f"(or set {HOME_ENV} to where it installed code-server)"
        )
    return launcher


@dataclass
class CodeServer:
    """One running code-server and the directories it owns."""

    process: subprocess.Popen[bytes]
    url: str
    password: str
    workspace: Path
    log_path: Path
    started_in: float  # seconds from spawn to the first healthy /healthz
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pgid(self) -> int:
        # start_new_session=True made code-server the leader of its own process group.
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group (SIGKILL: a loud death; SIGSTOP: a silent one)."""
        os.killpg(self.pgid, sig)

    def freeze(self) -> None:
        """A silent death: the kernel still accepts connections, nobody answers them."""
        self.kill(signal.SIGSTOP)

    def thaw(self) -> None:
        self.kill(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the process group and reap code-server. Safe to call twice and after kill()."""
        if self._stopped:
            return
        self._stopped = True
        # SIGKILL also ends stopped processes; no SIGCONT needed first.
        signal_group(self.pgid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_code_server(
    base_dir: Path,
    password: str,
    *,
    workspace: Path | None = None,
    timeout: float = 60.0,
) -> CodeServer:
    """Start code-server with password auth on 127.0.0.1 and an ephemeral port; return once
    /healthz answers. Everything it writes goes under `base_dir`. The caller must call stop()."""
    launcher = find_launcher()
    dirs = {name: base_dir / name for name in ("user-data", "extensions", "config")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    workspace = workspace or base_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    settings_file = dirs["user-data"] / "User" / "settings.json"
    if not settings_file.exists():
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(QUIET_SETTINGS, indent=2))
    log_path = base_dir / "code-server.log"
    env = {
        **os.environ,
        "PASSWORD": password,
        # code-server writes a default config.yaml into $XDG_CONFIG_HOME even when --config is given
        # elsewhere; keep both inside the test's directory, not in the user's home.
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_DATA_HOME": str(dirs["user-data"]),
    }
    args = [
        str(launcher),
        "--bind-addr=127.0.0.1:0",
        "--auth=password",
        f"--config={dirs['config'] / 'config.yaml'}",
        f"--user-data-dir={dirs['user-data']}",
        f"--extensions-dir={dirs['extensions']}",
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        str(workspace),
    ]
    spawned = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    server = CodeServer(process, "", password, workspace, log_path, 0.0)
    try:
        server.url = _wait_for_address(server, spawned + timeout)
        _wait_for_health(server, spawned + timeout)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.monotonic() - spawned
    return server


async def start_code_server_async(
    base_dir: Path, password: str, *, workspace: Path | None = None, timeout: float = 60.0
) -> CodeServer:
    """start_code_server() off the event loop, for async tests and fixtures."""
    return await asyncio.to_thread(
        start_code_server, base_dir, password, workspace=workspace, timeout=timeout
    )


@contextlib.contextmanager
def running_code_server(
    base_dir: Path, password: str, *, workspace: Path | None = None, timeout: float = 60.0
) -> Iterator[CodeServer]:
    """A code-server for the duration of a `with` block, killed on the way out whatever happens."""
    server = start_code_server(base_dir, password, workspace=workspace, timeout=timeout)
    try:
        yield server
    finally:
        server.stop()


def _wait_for_address(server: CodeServer, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = _LISTENING.search(server.log_text())
        if match:
            return match.group(1)
        _fail_if_exited(server)
        time.sleep(0.05)
    raise CodeServerError(f"code-server did not report its address in time:\n{server.log_text()}")


def healthy(url: str) -> bool:
    """True when the code-server at `url` answers /healthz ("expired" only means idle: any 2xx
    with a status is a live server)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return json.load(response).get("status") in {"alive", "expired"}
    except (OSError, ValueError):  # URLError, refused, reset and timeouts are all OSErrors
        return False


def _wait_for_health(server: CodeServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        _fail_if_exited(server)
        if healthy(server.url):
            return
        time.sleep(0.05)
    raise CodeServerError(f"code-server at {server.url} never became healthy:\n{server.log_text()}")


def _fail_if_exited(server: CodeServer) -> None:
    code = server.process.poll()
    if code is not None:
        raise CodeServerError(f"code-server exited with {code}:\n{server.log_text()}")


def titled_settings(base: Path, name: str, extra: dict[str, object] | None = None) -> None:
    """User settings whose window title names the machine (``dumont-NAME``): what a browser test
    reads to tell which machine's workbench it is looking at."""
    settings = base / name / "user-data" / "User"
    settings.mkdir(parents=True)
    title = {**(extra or {}), "window.title": f"dumont-{name}"}
    (settings / "settings.json").write_text(json.dumps(title))


@contextlib.contextmanager
def code_server_pair(base: Path, password: str) -> Iterator[dict[str, CodeServer]]:
    """ "gpu" and "cpu", titled, serving one folder (lsyncd keeps real machines' copies identical,
    and the workbench URL names the folder, so it must exist wherever the user lands); both
    stopped on the way out, whatever happened."""
    workspace = base / "workspace"
    workspace.mkdir()
    (workspace / "train.py").write_text("print('hello')\n")
    started: dict[str, CodeServer] = {}
    try:
        for name in ("gpu", "cpu"):
            titled_settings(base, name)
            started[name] = start_code_server(base / name, password, workspace=workspace)
        yield started
    finally:
        for server in started.values():
            server.stop()
