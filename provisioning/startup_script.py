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

from provisioning.errors import UsageError
from provisioning.remote_snapshot import GPU_SNAPSHOT_PACKAGES

__all__ = [
    "CODE_SERVER_ENV",
    "CODE_SERVER_INSTALLER",
    "PREEMPTION_UNIT",
    "PREEMPTION_WATCHER",
    "STANDBY_PACKAGES",
    "code_server_unit",
    "preemption_unit",
    "render_gpu_onstart",
    "render_preemption_watcher",
    "render_startup_script",
]

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
        raise UsageError(f"cannot read the code-server installer {installer}: {exc}") from exc
    if not ssh_public_key.startswith(("ssh-", "ecdsa-")):
        raise UsageError("bad SSH public key: expected an OpenSSH public key line")
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
            # Root logs in with a key only: the GPU (root on Vast) syncs into root's workspace
            # and code-server's user data, the same paths on both machines.
            # SHLVL=1: bash then skips ~/.bashrc for commands sshd runs. Every sync from the GPU
            # is such a command; a heavy .bashrc (pyenv init, say) cost a second per sync in tests.
            "echo 'SetEnv SHLVL=1' > /etc/ssh/sshd_config.d/dumont.conf",
            f"if [ {q(ssh_user)} = root ]; then",
            "  echo 'PermitRootLogin prohibit-password' >> /etc/ssh/sshd_config.d/dumont.conf",
            "fi",
            "systemctl enable ssh && systemctl restart ssh",
            # code-server serves the synced workspace once the operator has put the pair's
            # password (the same as the GPU's, so session cookies stay valid) into the env file:
            # a password in instance metadata would be readable by every project viewer.
            f"install -d -m 0700 {q(CODE_SERVER_ENV.rsplit('/', 1)[0])} /workspace",
            f"cat > /etc/systemd/system/dumont-code-server.service <<'{delimiter}'",
            code_server_unit(),
            delimiter,
            "systemctl daemon-reload",
            "systemctl enable dumont-code-server.service",
            f"[ -e {q(CODE_SERVER_ENV)} ] && systemctl start dumont-code-server.service || true",
            # Spot preemption, seen from inside: a watcher reports GCE's notice as a guest
            # attribute the provisioning side reads (StandbyVms.preempted).
            f"cat > {q(PREEMPTION_WATCHER)} <<'{delimiter}'",
            render_preemption_watcher().rstrip("\n"),
            delimiter,
            f"chmod 0755 {q(PREEMPTION_WATCHER)}",
            f"cat > /etc/systemd/system/{PREEMPTION_UNIT} <<'{delimiter}'",
            preemption_unit(),
            delimiter,
            "systemctl daemon-reload",
            f"systemctl enable {PREEMPTION_UNIT} && systemctl restart {PREEMPTION_UNIT}",
            "",
        ]
    )


PREEMPTION_WATCHER = "/usr/local/sbin/dumont-report-preempted"
PREEMPTION_UNIT = "dumont-report-preempted.service"


def render_preemption_watcher() -> str:
    """Report GCE's ``preempted`` metadata value (FALSE, then TRUE about 30 s before a spot VM
    stops) as the guest attribute ``dumont/preempted``, each time it changes.

    The metadata server answers only requests carrying ``Metadata-Flavor: Google``; with
    ``wait_for_change=true`` and the last ETag it holds the request until the value differs, so
    the notice arrives within a round trip and the loop costs nothing meanwhile. The first request
    (ETag 0) answers at once: a VM restarted after a preemption writes FALSE as soon as it boots.
    ``GCE_METADATA_HOST`` (google-auth's name for it) points a test at a fake server.
    """
    return "\n".join(
        [
            "#!/bin/bash",
            "# Dumont standby: report GCE's preemption notice as guest attribute dumont/preempted.",
            "set -u",
            'md="http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance"',
            "etag=0",
            "headers=$(mktemp)",
            "trap 'rm -f \"$headers\"' EXIT",
            "while true; do",
            "  if value=$(curl -sSf -H 'Metadata-Flavor: Google' -D \"$headers\" \\",
            '      --max-time 3700 "$md/preempted?wait_for_change=true&last_etag=$etag"); then',
            "    etag=$(awk 'tolower($1) == \"etag:\" {print $2}' \"$headers\" | tr -d '\\r')",
            "    if curl -sSf -X PUT -H 'Metadata-Flavor: Google' --data \"$value\" \\",
            '        "$md/guest-attributes/dumont/preempted"; then',
            '      echo "dumont: preempted=$value reported"',
            "    else",
            '      echo "dumont: preempted=$value NOT reported (guest attributes off?)" >&2',
            "    fi",
            "  else",
            "    sleep 1  # the metadata server restarts with the guest environment: try again",
            "  fi",
            "done",
            "",
        ]
    )


def preemption_unit() -> str:
    return "\n".join(
        [
            "[Unit]",
            "Description=Dumont: report GCE's spot preemption notice as a guest attribute",
            "After=network-online.target",
            "",
            "[Service]",
            f"ExecStart={PREEMPTION_WATCHER}",
            "Restart=always",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )


CODE_SERVER_ENV = "/etc/dumont/code-server.env"  # PASSWORD=... (mode 0600)


def code_server_unit(*, port: int = 8080, workspace: str = "/workspace") -> str:
    """The standby's code-server: same port, workspace and user data dir as on the GPU."""
    return "\n".join(
        [
            "[Unit]",
            "Description=code-server on the Dumont standby",
            "After=network-online.target",
            f"ConditionPathExists={CODE_SERVER_ENV}",
            "",
            "[Service]",
            f"EnvironmentFile={CODE_SERVER_ENV}",
            "Environment=HOME=/root",
            "ExecStart=/opt/dumont/code-server/bin/code-server --auth password"
            f" --bind-addr 0.0.0.0:{port} --disable-telemetry {workspace}",
            "Restart=always",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
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
        "# The snapshot engine's libraries: a new GPU restores the workspace from a bucket.",
        "if command -v python3 >/dev/null; then",
        f"  python3 -m pip install --quiet {' '.join(GPU_SNAPSHOT_PACKAGES)} || true",
        "fi",
    ]
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"
