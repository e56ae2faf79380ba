"""scripts/deploy.sh for real, twice, in a Debian container: the second run changes nothing.

The container (the locally bootstrapped Debian base, run with buildah's chroot isolation) is the
"host" that serves the proxy. What it lacks is stood in for by small scripts that record their
calls: systemctl (there is no systemd as PID 1; `enable --now` and `restart` start the proxy the way
the unit would, as user dumont with /etc/dumont/proxy.env), dumont-provision (the clouds and the
pair's machines are out of reach) and ssh-keygen (not in the base). Everything else is real: the
venv install of the checkout, the user, the files, the proxy answering its health check, and the
proxy forwarding to a backend of this test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.buildah import REPO, Container, pip_run_environment
from tests.support.ports import free_port
from tests.support.processes import Proc

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(900)]

if os.geteuid() != 0:  # pragma: no cover - CI and the developers' machines run as root
    pytest.skip("buildah's chroot runs need root", allow_module_level=True)

CHECKOUT = [
    "pyproject.toml",
    "README.md",
    "proxy",
    "provisioning",
    "templates",
    "static",
    "scripts/deploy.sh",
    "deploy/systemd",
]

SYSTEMCTL = """#!/bin/bash
# systemd stand-in: records the call; starts dumont-proxy.service as its unit would.
echo "systemctl $*" >> /fakes/calls.log
start() {
  ( set -a; . /etc/dumont/proxy.env; set +a
    exec setpriv --reuid=dumont --regid=dumont --init-groups /opt/dumont/bin/dumont-proxy
  ) >> /fakes/proxy.log 2>&1 &
  echo $! > /fakes/proxy.pid; touch /fakes/active
}
stop() {
  pid=$(cat /fakes/proxy.pid); kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done  # its port must be free again
}
case "$1" in
  is-enabled) [ -e /fakes/enabled ] ;;
  is-active) [ -e /fakes/active ] ;;
  enable) touch /fakes/enabled; [ "$2" = --now ] && start ;;
  restart) stop; start ;;
esac
"""
PROVISION = """#!/bin/sh
echo "dumont-provision $*" >> /fakes/calls.log
"""
SSH_KEYGEN = """#!/bin/sh
# writes a key pair where -f says, as the real one would
while [ $# -gt 0 ]; do [ "$1" = -f ] && file=$2; shift; done
echo "FAKE PRIVATE KEY" > "$file"; echo "ssh-ed25519 AAAAfake dumont" > "$file.pub"
echo "ssh-keygen" >> /fakes/calls.log
"""


def test_deploy_runs_twice_and_the_second_run_changes_nothing(
    base_image: str, backends: tuple[Proc, Proc], tmp_path: Path
) -> None:
    gpu, cpu = backends
    src = tmp_path / "src"
    for name in CHECKOUT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).exists():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, src / name)
    fakes = tmp_path / "fakes"
    (fakes / "bin").mkdir(parents=True)
    for name, text in (
        ("systemctl", SYSTEMCTL),
        ("dumont-provision", PROVISION),
        ("ssh-keygen", SSH_KEYGEN),
    ):
        (fakes / "bin" / name).write_text(text)
        (fakes / "bin" / name).chmod(0o755)
    (fakes / "calls.log").touch()
    fakes.chmod(0o777)
    (fakes / "calls.log").chmod(0o666)
    port = free_port()

    def deploy(standby_url: str) -> str:
        return (
            "bash /src/scripts/deploy.sh --pair t-1 --skip-pair"
            " --gpu root@gpu.invalid:2222 --standby dumont@standby.invalid"
            f" --gpu-url http://127.0.0.1:{gpu.port} --standby-url {standby_url}"
            f" --listen 127.0.0.1:{port}; echo \"exit $?\"; echo '@@@' >> /fakes/calls.log"
        )

    first_standby = f"http://127.0.0.1:{cpu.port}"
    script = "; ".join(
        [
            "mkdir -p /run/systemd/system",  # deploy.sh looks for a running systemd there
            deploy(first_standby),
            "echo @@@",
            deploy(first_standby),
            "echo @@@",
            deploy(f"http://localhost:{cpu.port}"),  # one setting changed
            # The proxy runs as user dumont and forwards to the primary backend.
            'echo "user $(stat -c %U /proc/$(cat /fakes/proxy.pid))"',
            "python3 -c 'import json, sys, urllib.request as r;"
            f' print("backend", json.load(r.urlopen("http://127.0.0.1:{port}/"))["backend"])\'',
            "kill $(cat /fakes/proxy.pid)",
        ]
    )
    pip_env, pip_volumes = pip_run_environment()
    env = {
        **pip_env,
        "PATH": "/fakes/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "DUMONT_PROVISION": "/fakes/bin/dumont-provision",
        "PIP_COMPILE": "0",  # no bytecode for the whole cloud SDK: a minute less on two cores
    }
    ctr = Container.create(base_image)
    try:
        proc = ctr.run(
            ["bash", "-c", script],
            env,
            timeout=600,
            check=False,
            volumes=[f"{src}:/src", f"{fakes}:/fakes", *pip_volumes],
        )
        outputs = proc.stdout.split("@@@\n")
        calls = [c.splitlines() for c in (fakes / "calls.log").read_text().split("@@@\n")]
        context = proc.stdout[-4000:] + proc.stderr[-4000:]
        assert len(outputs) == 3, context
        first, second, third = outputs

        assert "exit 0" in first, context
        assert f"the proxy answers on port {port}" in first
        assert "wrote: /etc/dumont/proxy.env" in first
        assert "wrote: /etc/systemd/system/dumont-proxy.service" in first
        assert calls[0] == [
            "ssh-keygen",
            "dumont-provision --store /var/lib/dumont/pairs.sqlite3 sync deploy"
            " --gpu root@gpu.invalid:2222 --standby dumont@standby.invalid"
            " --key /var/lib/dumont/.ssh/id_ed25519",
            "systemctl daemon-reload",
            "systemctl is-enabled --quiet dumont-proxy.service",
            "systemctl enable --now dumont-proxy.service",
        ]

        # Again, the same: every step finds its work done, nothing is written or restarted.
        assert "exit 0" in second, context
        assert "wrote:" not in second
        assert "would" not in second
        assert second.count("unchanged:") >= 5
        assert calls[1] == [
            "systemctl is-enabled --quiet dumont-proxy.service",
            "systemctl is-active --quiet dumont-proxy.service",
        ]
        assert f"the proxy answers on port {port}" in second

        # A changed setting rewrites proxy.env and restarts the proxy, and nothing else.
        assert "exit 0" in third, context
        assert "wrote: /etc/dumont/proxy.env" in third
        assert calls[2][-1] == "systemctl restart dumont-proxy.service"

        assert "user dumont" in third
        assert "backend gpu" in third
        env_file = ctr.run(["stat", "-c", "%a %U %G", "/etc/dumont/proxy.env"]).stdout.split()
        assert env_file == ["640", "root", "dumont"]
        hooks = ctr.run(["grep", "^DUMONT_HOOKS_", "/etc/dumont/proxy.env"]).stdout
        assert "sync fence --gpu root@gpu.invalid:2222 --standby dumont@standby.invalid" in hooks
        assert "sync reverse --gpu root@gpu.invalid:2222" in hooks
    finally:
        ctr.remove()
