"""Where a snapshot repository lives: a local directory, a host over SSH, a GCS bucket.

Every store holds named objects ("packs/ab/abcd...", "snapshots/....json") and offers the same
small set of operations, so the repository above it never knows which one it talks to.
"""

from __future__ import annotations

from provisioning.snapshot.stores.base import ObjectStore, ReadStream, skip_bytes

__all__ = ["ObjectStore", "ReadStream", "skip_bytes"]
