"""scripts/deploy.sh: its dry run shows every step and changes nothing (issue 8).

A real run needs the clouds, systemd as PID 1 and SSH to the pair's machines, none of which this
machine has; the steps it would take are what the dry run prints.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "scripts" / "deploy.sh"
# Hosts under .invalid never resolve: a dry run must not contact them, and cannot by accident.
MACHINES = [
    "--gpu",
    "root@gpu.invalid:2222",
    "--gpu-url",
    "http://gpu.invalid:40001",
    "--standby",
    "dumont@standby.invalid",
]
WATCHED = [
    Path("/etc/dumont"),
    Path("/var/lib/dumont"),
    Path("/etc/systemd/system/dumont-proxy.service"),
]


def deploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    before = [p.exists() for p in WATCHED]
    proc = deploy(
        "--dry-run",
        "--pair",
        "t-1",
        "--prefix",
        str(prefix),
        *MACHINES,
        "--",
        "--gpu-name",
        "RTX_4090",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for n in range(1, 6):
        assert f"== {n}/5 " in out
    assert f"would run: python3 -m venv {prefix}" in out
    assert "pair create --pair t-1 --ssh-public-key /var/lib/dumont/.ssh/id_ed25519.pub" in out
    assert "--gpu-name RTX_4090" in out  # flags after -- go to `pair create`
    assert "sync deploy --gpu root@gpu.invalid:2222 --standby dumont@standby.invalid" in out
    assert "would write: /etc/dumont/proxy.env" in out or "unchanged: /etc/dumont/proxy.env" in out
    assert "systemctl" in out
    assert not prefix.exists()
    assert [p.exists() for p in WATCHED] == before


def test_without_the_machines_it_stops_after_the_pair_step(tmp_path: Path) -> None:
    proc = deploy("--dry-run", "--pair", "t-1", "--prefix", str(tmp_path / "p"))
    assert proc.returncode == 3
    assert "== 3/5 pair t-1" in proc.stdout
    assert "== 4/5" not in proc.stdout
    assert "--gpu-url" in proc.stderr


def test_pair_is_required() -> None:
    proc = deploy("--dry-run")
    assert proc.returncode == 2
    assert "--pair is required" in proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", ["deploy.sh", "make-base-image.sh"])
def test_shellcheck(script: str) -> None:
    proc = subprocess.run(
        ["shellcheck", str(REPO / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
