"""The continuity bed: GPU and CPU hosts with sshd and code-server, lsyncd between them deployed by
the real ``dumont-provision sync deploy``, a checkpoint writer on the GPU, and the proxy in front
with the provisioning hooks wired (fence before failover, reverse sync before failback).

Everything is started by ``ContinuityBed.start()`` and removed by ``close()``, which is safe after
a partial start; processes are killed by pid or process-group id, never by name.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.hosts import Host, HostNet
from tests.support.codeserver import find_launcher, healthy
from tests.support.ports import free_port, port_open
from tests.support.processes import kill_group
from tests.support.sshd import keygen, sshd_argv, write_sshd_config
from tests.support.waiting import wait_until

__all__ = ["PASSWORD", "BedSettings", "Checkpoint", "ContinuityBed"]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "continuity-e2e-password"
CODE_SERVER_PORT = 8080
PROVISION = [sys.executable, "-m", "provisioning.cli"]
# code-server is VS Code for the web, whose default is files.autoSave = afterDelay: an edit is on
# disk a second later and there is no unsaved editor to lose. The user leaves one editor
# unsaved, so the bed turns auto-save off; everything else stays code-server's default.
USER_SETTINGS = {"files.autoSave": "off"}

WRITER = r"""
import os, sys, time
folder, log, period = sys.argv[1], sys.argv[2], float(sys.argv[3])
os.makedirs(folder, exist_ok=True)
n, next_at = 0, time.time()
with open(log, "a", buffering=1) as out:
    while True:
        n += 1
        with open(f"{folder}/ckpt-{n:06d}.txt", "w") as f:
            f.write(f"checkpoint {n} {time.time():.6f}\n")
        out.write(f"{n} {time.time():.6f}\n")
        next_at += period
        time.sleep(max(0.0, next_at - time.time()))
"""


@dataclass(frozen=True)
class BedSettings:
    sync_delay: float = 1.0  # dumont-provision's default
    health_interval: float = 0.5
    health_timeout: float = 4.0
    fall: int = 3
    rise: int = 2
    drain_timeout: float = 10.0  # dumont-provision sync fence's default
    writer_period: float = 0.1
    # The GPU's code-server and the proxy run at nice -5: on a shared 2-core box with a load of 10+,
    # a starved code-server misses health checks and the proxy fails over before any fault.
    nice: int = -5


@dataclass(frozen=True)
class Checkpoint:
    number: int
    written_at: float  # wall clock, after the file was closed


@dataclass
class ContinuityBed:
    base: Path
    settings: BedSettings = field(default_factory=BedSettings)
    net: HostNet | None = None
    proxy: subprocess.Popen[bytes] | None = None
    proxy_port: int = 0
    control_port: int = 0
    admin_key: Path | None = None
    writer: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------ layout

    @property
    def gpu(self) -> Host:
        assert self.net is not None
        return self.net.hosts["gpu"]

    @property
    def cpu(self) -> Host:
        assert self.net is not None
        return self.net.hosts["cpu"]

    @property
    def view(self) -> Path:
        """The workspace path as both hosts (and the IDE's URL) see it."""
        assert self.net is not None
        return self.net.view

    @property
    def workspace_path(self) -> Path:
        return self.view / "workspace"

    def workspace(self, host: Host) -> Path:
        """A host's workspace on its disk, as the test (root namespace) reads it."""
        return host.disk / "workspace"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def ide_url(self) -> str:
        return f"{self.url}/?folder={self.workspace_path}"

    @property
    def writer_log(self) -> Path:
        return self.base / "writer.log"

    def backend_url(self, host: Host) -> str:
        return f"http://{host.address}:{CODE_SERVER_PORT}"

    def sync_flags(self) -> list[str]:
        assert self.admin_key is not None
        return [
            f"--gpu=root@{self.gpu.address}:22",
            f"--standby=root@{self.cpu.address}:22",
            f"--key={self.admin_key}",
            f"--workspace={self.view / 'workspace'}",
            f"--user-data={self.view / 'user-data'}",
            f"--gpu-state-dir={self.gpu.disk / 'state'}",
            f"--standby-state-dir={self.cpu.disk / 'state'}",
            f"--standby-authorized-keys={self.cpu.disk / 'sshd' / 'authorized_keys'}",
            f"--delay={self.settings.sync_delay:g}",
        ]

    def hook_command(self, verb: str, *extra: str) -> str:
        return shlex.join([*PROVISION, "sync", verb, *self.sync_flags(), *extra])

    # ----------------------------------------------------------------------------- start-up

    def start(self, seed: dict[str, str]) -> None:
        """Hosts, sshd, code-servers, forward sync, proxy; ``seed`` files start on the GPU."""
        try:
            self.net = HostNet(self.base).open()
            self.admin_key = self.base / "admin_key"
            keygen(self.admin_key)
            for host in (self.gpu, self.cpu):
                self.start_sshd(host)
            for name, text in seed.items():
                path = self.workspace(self.gpu) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            for host in (self.gpu, self.cpu):
                self.start_code_server(host)
            for host in (self.gpu, self.cpu):
                self.wait_healthy(host)
            self.provision("deploy", "--timeout=120")
            self.start_proxy()
        except BaseException:
            self.close()
            raise

    def start_sshd(self, host: Host) -> None:
        directory = host.disk / "sshd"
        directory.mkdir(exist_ok=True)
        keys = directory / "authorized_keys"
        if not keys.exists():
            assert self.admin_key is not None
            keys.write_text(Path(f"{self.admin_key}.pub").read_text())
        config = write_sshd_config(directory, address=host.address, port=22, authorized_keys=keys)
        # The host's own kill_all() ends this sshd and its per-connection children: they are all
        # in the host's network namespace.
        host.popen(sshd_argv(config), log=directory / "sshd.log")
        wait_until(lambda: port_open(host.address, 22), f"sshd on {host.name}", 15, interval=0.1)

    def start_code_server(self, host: Host) -> None:
        d = host.disk
        for sub in ("extensions", "config", "xdg"):
            (d / sub).mkdir(exist_ok=True)
        settings = d / "user-data" / "User" / "settings.json"
        if not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(USER_SETTINGS, indent=2) + "\n")
        argv = [
            str(find_launcher()),
            f"--bind-addr=0.0.0.0:{CODE_SERVER_PORT}",
            "--auth=password",
            f"--config={d / 'config' / 'config.yaml'}",
            f"--user-data-dir={self.view / 'user-data'}",
            f"--extensions-dir={d / 'extensions'}",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",
            str(self.workspace_path),
        ]
        env = {
            "PASSWORD": PASSWORD,
            "XDG_CONFIG_HOME": str(d / "config"),
            "XDG_DATA_HOME": str(d / "xdg"),
            "HOME": str(d / "home"),
        }
        host.popen(_niced(argv, self.settings.nice), log=d / "code-server.log", env=env)

    def wait_healthy(self, host: Host, timeout: float = 90.0) -> None:
        wait_until(
            lambda: healthy(self.backend_url(host)),
            f"code-server on {host.name}",
            timeout,
            interval=0.1,
        )

    def provision(self, verb: str, *extra: str, timeout: float = 180.0) -> str:
        result = subprocess.run(
            [*PROVISION, "sync", verb, *self.sync_flags(), *extra],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dumont-provision sync {verb}: {result.stderr.strip()}")
        return result.stdout

    def lsyncd_failing_retries(self) -> int:
        """How often the GPU's lsyncd was refused in a row (needs the GPU reachable)."""
        result = subprocess.run(
            [*PROVISION, "sync", "status", "--no-probe", "--json", *self.sync_flags()],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            return int(json.loads(result.stdout)["lsyncd"]["failing_retries"])
        return -1

    def start_proxy(self) -> None:
        self.proxy_port, self.control_port = free_port(), free_port()
        s = self.settings
        argv = [
            sys.executable,
            "-m",
            "proxy",
            f"--primary={self.backend_url(self.gpu)}",
            f"--standby={self.backend_url(self.cpu)}",
            f"--listen=127.0.0.1:{self.proxy_port}",
            f"--control-listen=127.0.0.1:{self.control_port}",
            f"--health-interval={s.health_interval:g}",
            f"--health-timeout={s.health_timeout:g}",
            f"--fall={s.fall}",
            f"--rise={s.rise}",
            "--failback=manual",
            "--access-log=true",  # the artifacts' proxy.log dates every request the browser made
            "--hooks-timeout=180",
            "--hooks-before-failover",
            self.hook_command("fence", f"--drain-timeout={s.drain_timeout:g}"),
            "--hooks-before-failback",
            self.hook_command("reverse", "--timeout=120"),
        ]
        with (self.base / "proxy.log").open("ab") as log:
            self.proxy = subprocess.Popen(
                _niced(argv, s.nice),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self.status().get("active") == "primary",
            "the proxy serving the GPU",
            30,
            interval=0.1,
        )

    def start_writer(self) -> None:
        folder = self.view / "workspace" / "checkpoints"
        self.writer = self.gpu.popen(
            [
                "python3",
                "-c",
                WRITER,
                str(folder),
                str(self.writer_log),
                str(self.settings.writer_period),
            ],
            log=self.base / "writer.out",
        )

    # ------------------------------------------------------------------------------ observe

    def status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.url}/__dumont/status", timeout=2) as response:
                result: dict[str, Any] = json.load(response)
                return result
        except (OSError, ValueError):
            return {}

    def admin(self, command: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}/admin/{command}", data=b"", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result: dict[str, Any] = json.load(response)
                return result
        except urllib.error.HTTPError as exc:
            return {"error": exc.code, "detail": exc.read().decode(errors="replace")}

    def checkpoints_written(self) -> list[Checkpoint]:
        out = []
        for line in self.writer_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append(Checkpoint(int(parts[0]), float(parts[1])))
        return out

    def checkpoints_on(self, host: Host) -> set[int]:
        folder = self.workspace(host) / "checkpoints"
        if not folder.is_dir():
            return set()
        return {
            int(p.name[5:11])
            for p in folder.iterdir()
            if p.name.startswith("ckpt-") and p.suffix == ".txt"
        }

    def proxy_log(self) -> str:
        return (self.base / "proxy.log").read_text(errors="replace")

    # ----------------------------------------------------------------------------- teardown

    def close(self) -> None:
        if self.proxy is not None:
            kill_group(self.proxy)
            self.proxy = None
        if self.net is not None:
            self.net.close()


def _niced(argv: list[str], nice: int) -> list[str]:
    return ["nice", "-n", str(nice), *argv] if nice else argv
