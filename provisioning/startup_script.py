"""The standby VM's start-up script: code-server, rsync, lsyncd and the pair's SSH key.

code-server is installed by the very script the tests use (scripts/install-code-server.sh), embedded
at render time so the VM needs nothing from this repository. The script runs on every boot (that is
how GCE start-up scripts work); the package installs are skipped once a marker file exists, so a
standby restarted after a spot preemption comes back in seconds.
"""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

from provisioning.errors import ConfigError

__all__ = ["CODE_SERVER_INSTALLER", "STANDBY_PACKAGES", "render_startup_script"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_SERVER_INSTALLER = REPO_ROOT / "scripts" / "install-code-server.sh"

# rsync and lsyncd for the sync, openssh-server for the GPU's rsync, psmisc for fuser (fencing
# kills in-flight syncs), python3 for rrsync (the read-only gate), and code-server's build needs.
STANDBY_PACKAGES = (
    "rsync",
    "lsyncd",
    "openssh-server",
    "psmisc",
    "python3",
    "python3-venv",
    "ca-certificates",
    "curl",
    "git",
    "build-essential",
    "pkg-config",
    "libkrb5-dev",
    "libx11-dev",
    "libxkbfile-dev",
    "libsecret-1-dev",
)


def render_startup_script(
    *,
    pair_id: str,
    ssh_user: str,
    ssh_public_key: str,
    installer: Path = CODE_SERVER_INSTALLER,
    state_dir: str = "/var/lib/dumont",
) -> str:
    try:
        installer_text = installer.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the code-server installer {installer}: {exc}") from exc
    if not ssh_public_key.startswith(("ssh-", "ecdsa-")):
        raise ConfigError("bad SSH public key: expected an OpenSSH public key line")
    delimiter = f"DUMONT_INSTALLER_{secrets.token_hex(8)}"
    marker = f"{state_dir}/.provisioned"
    q = shlex.quote
    return "\n".join(
        [
            "#!/bin/bash",
            f"# Dumont standby for pair {pair_id} (dumont-provision); runs at every boot.",
            "set -euo pipefail",
            "export DEBIAN_FRONTEND=noninteractive",
            f"install -d -m 0755 {q(state_dir)}",
            f"if [ ! -e {q(marker)} ]; then",
            "  apt-get update",
            f"  apt-get install -y --no-install-recommends {' '.join(STANDBY_PACKAGES)}",
            f"  cat > {q(state_dir)}/install-code-server.sh <<'{delimiter}'",
            installer_text.rstrip("\n"),
            delimiter,
            f"  bash {q(state_dir)}/install-code-server.sh",
            f"  touch {q(marker)}",
            "fi",
            # The guest agent also installs metadata ssh-keys; writing it here makes the key work
            # on images without the agent and before it has run.
            f"id -u {q(ssh_user)} >/dev/null 2>&1 || useradd -m -s /bin/bash {q(ssh_user)}",
            f"home=$(getent passwd {q(ssh_user)} | cut -d: -f6)",
            'install -d -m 0700 -o "$(id -u ' + q(ssh_user) + ')" "$home/.ssh"',
            f'grep -qxF {q(ssh_public_key)} "$home/.ssh/authorized_keys" 2>/dev/null'
            f' || echo {q(ssh_public_key)} >> "$home/.ssh/authorized_keys"',
            f'chown {q(ssh_user)} "$home/.ssh/authorized_keys"',
            "systemctl enable --now ssh",
            "",
        ]
    )


def render_gpu_onstart(*, extra: str = "") -> str:
    """Vast's on-start script for the GPU: the sync tools lsyncd needs (containers lack them)."""
    lines = [
        "#!/bin/bash",
        "# Dumont GPU (dumont-provision): lsyncd, rsync and ssh for the sync to the standby.",
        "export DEBIAN_FRONTEND=noninteractive",
        "if ! command -v lsyncd >/dev/null || ! command -v rsync >/dev/null; then",
        "  apt-get update && apt-get install -y --no-install-recommends"
        " lsyncd rsync openssh-client psmisc",
        "fi",
        "mkdir -p /var/lib/dumont /workspace",
    ]
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"
