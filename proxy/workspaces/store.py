"""The workspaces the control API made, kept in the state directory (SQLite), so they survive a
restart.

One row per workspace name: its document (WorkspaceSpec.document), or NULL for one the API
deleted, so that the TOML file, which seeds the store, cannot bring a deleted workspace back.
A file that is not a readable store stops start-up with one line and is never written to.
SQLite because one file with atomic commits is what a restart needs; the store is written only
on API changes, never on the request path.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["StoreError", "WorkspaceStore"]

FILE_NAME = "workspaces.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS workspaces ("
    " name TEXT PRIMARY KEY, document TEXT, updated_at REAL NOT NULL)"
)


class StoreError(Exception):
    """The state directory cannot be read or written; the message is one line."""


class WorkspaceStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        try:
            # Read first: a file that is not ours fails here, before anything is written to it.
            self._db.execute("PRAGMA schema_version").fetchone()
            tables = {
                row[0]
                for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if tables - {"workspaces"}:
                raise StoreError(f"{self.path} is not a workspace store (tables {sorted(tables)})")
            self._db.execute(_SCHEMA)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path} is corrupt or not a workspace store ({exc}); "
                             "move it away to start empty") from None  # fmt: skip
        except StoreError:
            self._db.close()
            raise

    def load(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The stored documents by name, and the names the API deleted."""
        live: dict[str, dict[str, Any]] = {}
        deleted: set[str] = set()
        try:
            rows = self._db.execute(
                "SELECT name, document FROM workspaces ORDER BY name"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from None
        for name, document in rows:
            if document is None:
                deleted.add(name)
                continue
            try:
                live[name] = json.loads(document)
            except ValueError as exc:
                raise StoreError(f"{self.path}: workspace {name!r} is not JSON ({exc})") from None
        return live, deleted

    def put(self, name: str, document: Mapping[str, Any]) -> None:
        self._write(name, json.dumps(document, sort_keys=True))

    def delete(self, name: str) -> None:
        self._write(name, None)

    def _write(self, name: str, document: str | None) -> None:
        try:
            self._db.execute(
                "INSERT INTO workspaces (name, document, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET document = excluded.document,"
                " updated_at = excluded.updated_at",
                (name, document, time.time()),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()
