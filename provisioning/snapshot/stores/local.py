"""A repository in a local directory (or a mounted disk)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from provisioning.snapshot.errors import DestinationError
from provisioning.snapshot.stores.base import Payload, ReadStream

__all__ = ["LocalStore"]


class LocalStore:
    """Objects are files under ``root``; a put writes a temporary file and renames it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.urandom(4).hex()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DestinationError(
                f"destination {self.root} is not writable: {exc.strerror}"
            ) from exc

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: Payload) -> None:
        final = self._path(name)
        temporary = final.with_name(f"{final.name}.tmp-{os.urandom(4).hex()}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as out:
                out.write(data)
            temporary.replace(final)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise DestinationError(f"cannot write {final}: {exc.strerror}") from exc

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except OSError as exc:
            raise DestinationError(f"cannot read {self._path(name)}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def open_stream(self, name: str) -> Iterator[ReadStream]:
        try:
            stream = self._path(name).open("rb")
        except OSError as exc:
            raise DestinationError(f"cannot read {self._path(name)}: {exc.strerror}") from exc
        with stream:
            yield stream

    def list(self, prefix: str) -> list[str]:
        directory, _, _ = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        names: list[str] = []
        for dirpath, subdirs, files in os.walk(base):
            relative_dir = Path(dirpath).relative_to(self.root).as_posix()
            lead = "" if relative_dir == "." else f"{relative_dir}/"
            # Descend only where names can still start with the prefix (not all of packs/).
            subdirs[:] = [d for d in subdirs if _may_hold(f"{lead}{d}/", prefix)]
            names.extend(
                f"{lead}{file_name}"
                for file_name in files
                if ".tmp-" not in file_name and f"{lead}{file_name}".startswith(prefix)
            )
        return sorted(names)

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release: files are opened per call."""


def _may_hold(directory: str, prefix: str) -> bool:
    return directory.startswith(prefix) or prefix.startswith(directory)
