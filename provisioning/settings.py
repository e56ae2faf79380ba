"""The settings of ``dumont-provision``: one typed model, read by proxy.settings.

A setting comes from a flag, else ``DUMONT_PROVISION_<KEY>`` in the environment, else the
``[provisioning]`` table of a TOML file (``--config`` or ``DUMONT_PROVISION_CONFIG``; keys spelt
as the flags, ``user-data``, or as the fields, ``user_data``), else the default declared here.

The prefix is not the proxy's ``DUMONT_``: hooks inherit the proxy's environment, where
``DUMONT_STANDBY`` is an HTTP URL, not the SSH address ``--standby`` means here.

Each verb takes the settings it names (:func:`add_options`); the file and the environment may hold
every verb's settings, and a verb reads only its own.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from provisioning.errors import UsageError
from provisioning.vast import DEFAULT_VAST_URL
from proxy.settings import (
    Schema,
    boolean,
    integer,
    optional_text,
    real,
    setting,
    text,
    texts,
)

__all__ = [
    "ENV_PREFIX",
    "PROVISION",
    "ProvisionSettings",
    "add_options",
    "load",
    "resolve",
]

ENV_PREFIX = "DUMONT_PROVISION_"


def _strings(key: str, raw: Any) -> list[str]:
    return list(texts(key, raw))


def _host_list(key: str, raw: Any) -> list[str]:
    # A repeated flag gives a list whose items may still hold commas (--hosts a,b --hosts c).
    return [host for item in texts(key, raw) for host in _strings(key, item)]


def _text(default: str | None, help: str, **spec: Any) -> Any:
    return setting(default, help=help, parse=text if default is not None else optional_text, **spec)


def _number(default: float | None, help: str, **spec: Any) -> Any:
    return setting(default, help=help, parse=real, **spec)


def _whole(default: int | None, help: str, **spec: Any) -> Any:
    return setting(default, help=help, parse=integer, **spec)


def _switch(help: str) -> Any:
    return setting(False, help=help, parse=boolean, takes="switch")


@dataclass(frozen=True)
class ProvisionSettings:
    store: str = _text("/var/lib/dumont/pairs.sqlite3", "pair store")
    # ---- the clouds
    vast_url: str = _text(DEFAULT_VAST_URL, "Vast.ai API base URL")
    vast_api_key_file: str | None = _text(
        None, "file holding the Vast.ai API key (else VAST_API_KEY)"
    )
    gcp_project: str | None = _text(None, "Google Cloud project of the standbys")
    gcp_zone: str = _text("us-central1-a", "Compute Engine zone")
    gcp_credentials: str | None = _text(None, "service-account JSON (else application default)")
    gcp_endpoint: str | None = _text(None, "Compute Engine API endpoint override (tests, proxies)")
    gcp_anonymous: bool = _switch("no Google credentials; only together with --gcp-endpoint")
    poll_interval: float = _number(5.0, "seconds between state polls")
    # ---- a new pair
    gpu_name: str | None = _text(None, "GPU model as Vast names it, e.g. RTX_4090")
    num_gpus: int = _whole(1, "GPUs per machine")
    gpu_query: str | None = _text(None, "extra Vast search filters as JSON")
    image: str = _text("vastai/base-image", "Docker image for the GPU")
    disk: float = _number(50.0, "GPU disk in GB")
    max_price: float | None = _number(None, "highest $/hour accepted")
    ssh_public_key: str | None = _text(None, "admin public key installed on both machines")
    standby_user: str = _text(
        "root", "admin and sync user on the standby (root: the same paths as on the GPU)"
    )
    termination_action: str = setting(
        "STOP", help="what GCP does on spot preemption", choices=("STOP", "DELETE")
    )
    standby_ssh_port: int = _whole(22, "the standby's SSH port")
    code_server_port: int = _whole(8080, "code-server's port on a GPU")
    reason: str | None = _text(None, "why (default: the hook's DUMONT_REASON, else Vast's state)")
    # ---- the sync
    gpu: str | None = _text(None, "the GPU over SSH from here: [ssh://][user@]host[:port]")
    standby: str | None = _text(None, "the standby over SSH from here: [user@]host[:port]")
    standby_from_gpu: str | None = _text(
        None, "the standby as the GPU reaches it (default: --standby's address)"
    )
    sync_user: str | None = _text(None, "the user the GPU syncs as (default: --standby's user)")
    key: str | None = _text(None, "admin SSH private key for both machines")
    known_hosts: str | None = _text(None, "known_hosts file (default: host keys are not checked)")
    workspace: str = _text("/workspace", "GPU_PATH[:STANDBY_PATH] to sync")
    user_data: str = _text(
        "/root/.local/share/code-server",
        "code-server's user data dir, GPU_PATH[:STANDBY_PATH], or 'none'",
    )
    gpu_state_dir: str = _text("/var/lib/dumont", "lsyncd files on the GPU")
    standby_state_dir: str = _text("/var/lib/dumont", "gate and fence flag")
    standby_authorized_keys: str = _text(
        ".ssh/authorized_keys",
        "where the gated sync key goes on the standby (relative: the sync user's home)",
    )
    delay: float = _number(1.0, "lsyncd delay in seconds")
    delete: str = setting(
        "running", help="lsyncd delete mode", choices=("true", "false", "running", "startup")
    )
    exclude: list[str] = setting(
        help="extra exclude pattern", parse=_strings, takes="many", default_factory=list
    )
    ssh_control_path: str = _text(
        "/tmp/.dumont-ssh-%C",
        "where lsyncd's shared ssh connection lives on the GPU (under 108 bytes)",
    )
    timeout: float = _number(3600.0, "seconds for long copies")
    drain_timeout: float = _number(10.0, "seconds for in-flight syncs")
    proxy_control: str | None = _text(
        None,
        "the proxy's control URL: sync verbs report the sync's state there (PUT /admin/sync),"
        " reconcile a missing standby, gpu-lost registers the new GPU; pair create, destroy and"
        " reconcile keep the pair's workspace there ('' turns it off)",
    )
    admin_token: str | None = _text(None, "bearer token for the proxy's admin API")
    # ---- the pair's workspace at the proxy (issue 15)
    hosts: list[str] = setting(
        help="Host names the pair's workspace answers to at the proxy: alice.ide.example.com or"
        " *.alice.example.org (repeatable or comma-separated; default NAME.BASE_DOMAIN)",
        parse=_host_list,
        takes="many",
        default_factory=list,
    )
    base_domain: str | None = _text(
        None, "with --proxy-control, pair NAME answers at NAME.BASE_DOMAIN unless --hosts is given"
    )
    serve_timeout: float = _number(
        900.0,
        "seconds pair create waits for the proxy to serve the new workspace (the standby's"
        " start-up script installs code-server: minutes)",
    )
    # ---- workspace snapshots on the GPU
    snapshot_destination: str | None = _text(
        None,
        "snapshot repository as the GPU reaches it: gs://bucket/prefix, ssh://... or a path",
    )
    gpu_python: str = _text("python3", "Python 3.11+ on the GPU")
    gpu_env: list[str] = setting(
        help="NAME=VALUE for the GPU's snapshot commands, e.g. GOOGLE_APPLICATION_CREDENTIALS=/k",
        parse=_strings,
        takes="many",
        default_factory=list,
    )
    # ---- parking (issue 18)
    park_mode: str = setting(
        "destroy",
        help="destroy the GPU (a snapshot keeps its disk) or stop it (the provider keeps it)",
        choices=("destroy", "stop"),
    )
    nvidia_smi: str = _text("nvidia-smi", "nvidia-smi on the GPU")
    idle_threshold: float = _number(5.0, "idle below this %")
    park_after: float = _number(1800.0, "idle seconds to park")
    announce: float = _number(120.0, "notice this long before")
    check_interval: float = _number(30.0, "seconds per sample")
    offer_retry_for: float = _number(
        0.0, "resume: keep looking for a matching GPU offer this many seconds"
    )
    offer_retry_interval: float = _number(
        300.0, "resume: seconds between searches while no offer matches"
    )
    resume_at: list[str] = setting(
        help="autopark: resume a parked GPU at DAYS HH:MM (like 'mon-fri 08:30'; repeatable)",
        parse=_strings,
        takes="many",
        default_factory=list,
    )
    timezone: str = _text(
        "UTC", "the pair's time zone for --resume-at (an IANA name like Europe/Lisbon)"
    )


def _error(key: str, problem: str) -> UsageError:
    return UsageError(f"{key.replace('_', '-')}: {problem}")


PROVISION: Schema[ProvisionSettings] = Schema(
    ProvisionSettings,
    env_prefix=ENV_PREFIX,
    error=_error,
    toml_table="provisioning",
    config_env=f"{ENV_PREFIX}CONFIG",
)


def add_options(parser: argparse.ArgumentParser, *keys: str) -> None:
    """Flags on ``parser`` for these settings of :class:`ProvisionSettings`."""
    PROVISION.add_flags(parser, keys)


def load(args: argparse.Namespace) -> ProvisionSettings:
    """The settings of the verb ``args`` chose, from its flags, the environment and the file."""
    return PROVISION.load(args, os.environ, only_taken=True)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every setting the chosen verb takes on ``args`` (its handlers read them there)."""
    settings = load(args)
    for entry in PROVISION.taken(args):
        setattr(args, entry.dest, getattr(settings, entry.key))
    return args
