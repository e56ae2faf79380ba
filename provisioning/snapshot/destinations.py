"""Turning a destination string into a store.

    /srv/snapshots, ./snaps, file:///srv/snapshots   a local directory
    ssh://[user@]host[:port]/path                     a directory on another host, over SSH
    gs://bucket[/prefix]                              a Google Cloud Storage bucket

For GCS, STORAGE_EMULATOR_HOST (the variable Google's own clients honour) points at another
endpoint without credentials; otherwise application default credentials are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from provisioning.snapshot.errors import DestinationError
from provisioning.snapshot.stores.base import ObjectStore
from provisioning.snapshot.stores.local import LocalStore

__all__ = ["DestinationOptions", "open_destination"]

_GCS_ENDPOINT = "https://storage.googleapis.com"


@dataclass(frozen=True, slots=True)
class DestinationOptions:
    ssh_config: Path | None = None


def open_destination(text: str, options: DestinationOptions | None = None) -> ObjectStore:
    options = options or DestinationOptions()
    if not text:
        raise DestinationError("destination is empty")
    if "://" not in text:
        return LocalStore(Path(text).expanduser().absolute())
    parts = urlsplit(text)
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    if parts.scheme == "ssh":
        from provisioning.snapshot.stores.ssh import SshStore

        if not parts.hostname or not parts.path.strip("/"):
            raise DestinationError(f"destination {text!r} needs a host and a path: ssh://host/path")
        host = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        return SshStore(host, parts.path, port=parts.port, config_file=options.ssh_config)
    if parts.scheme == "gs":
        from provisioning.snapshot.stores.gcs import GcsStore, default_token_provider

        if not parts.netloc:
            raise DestinationError(f"destination {text!r} names no bucket: gs://bucket/prefix")
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            return GcsStore(parts.netloc, parts.path, endpoint=emulator, token_provider=None)
        try:
            token = default_token_provider()
        except Exception as exc:  # google.auth raises DefaultCredentialsError and others
            raise DestinationError(
                f"no Google credentials for {text}: {type(exc).__name__}"
            ) from exc
        return GcsStore(parts.netloc, parts.path, endpoint=_GCS_ENDPOINT, token_provider=token)
    raise DestinationError(f"destination {text!r}: unknown scheme {parts.scheme!r}")
