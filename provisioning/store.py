"""The pair store: one SQLite file (WAL mode) holding every pair and its history.

The store is written *before* each cloud call (the intent) and after it (the result), so a process
killed between the two leaves a row whose state says what was under way; ``reconcile`` reads it and
asks the clouds what really happened.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from provisioning.errors import PairNotFound, StoreError

__all__ = ["Pair", "PairEvent", "PairState", "PairStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    gpu_generation  INTEGER NOT NULL DEFAULT 1,
    gpu_instance_id INTEGER,
    standby_name    TEXT NOT NULL,
    spec            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_pair ON events (pair_id, id);
-- Issue 15: the Host names a pair's workspace answers to at the proxy (a JSON list). A table of
-- its own, so a store made before it opens unchanged and a pair without a row is simply not
-- registered with a proxy by name.
CREATE TABLE IF NOT EXISTS workspace_hosts (
    pair_id    TEXT PRIMARY KEY,
    hosts      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class PairState(StrEnum):
    CREATING = "creating"  # GPU and/or standby may or may not exist yet
    READY = "ready"  # both exist
    DEGRADED = "degraded"  # the GPU was lost; the standby serves
    PARKING = "parking"  # planned switch to the standby under way; the GPU still exists
    PARKED = "parked"  # the standby serves; the GPU was destroyed (or stopped) to save money
    RESUMING = "resuming"  # a GPU is being rented (or started) and filled to take over again
    DESTROYING = "destroying"  # the user asked for both to go
    DESTROYED = "destroyed"


@dataclass(frozen=True)
class Pair:
    id: str
    state: PairState
    standby_name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    gpu_generation: int = 1
    gpu_instance_id: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def gpu_label(self) -> str:
        """The Vast label of the current GPU; a replacement GPU gets the next generation."""
        return f"{self.gpu_label_prefix}{self.gpu_generation}"

    @property
    def gpu_label_prefix(self) -> str:
        return f"dumont:{self.id}:gpu:"


@dataclass(frozen=True)
class PairEvent:
    at: float
    kind: str
    detail: str


class PairStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open pair store {path}: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")  # a killed process must not lose a step
            with db:  # one transaction, committed on success
                yield db
        except sqlite3.Error as exc:
            raise StoreError(f"pair store {self.path}: {exc}") from exc
        finally:
            db.close()

    def insert(self, pair: Pair) -> Pair:
        """Insert ``pair`` unless its id exists; returns the stored row either way."""
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO pairs (id, state, gpu_generation, gpu_instance_id,"
                " standby_name, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pair.id,
                    pair.state.value,
                    pair.gpu_generation,
                    pair.gpu_instance_id,
                    pair.standby_name,
                    json.dumps(dict(pair.spec), sort_keys=True),
                    now,
                    now,
                ),
            )
        return self.get(pair.id)

    def get(self, pair_id: str) -> Pair:
        with self._connect() as db:
            row = db.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
        if row is None:
            raise PairNotFound(f"unknown pair {pair_id!r}")
        return _pair_from_row(row)

    def list(self, *, include_destroyed: bool = False) -> builtins.list[Pair]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM pairs ORDER BY created_at, id").fetchall()
        pairs = [_pair_from_row(r) for r in rows]
        return [p for p in pairs if include_destroyed or p.state is not PairState.DESTROYED]

    def update(self, pair: Pair, **changes: Any) -> Pair:
        updated = replace(pair, **changes)
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE pairs SET state = ?, gpu_generation = ?, gpu_instance_id = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    updated.state.value,
                    updated.gpu_generation,
                    updated.gpu_instance_id,
                    time.time(),
                    pair.id,
                ),
            )
            if cursor.rowcount != 1:
                raise PairNotFound(f"unknown pair {pair.id!r}")
        return self.get(pair.id)

    def record(self, pair_id: str, kind: str, detail: str = "") -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO events (pair_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                (pair_id, time.time(), kind, detail),
            )

    def set_hosts(self, pair_id: str, hosts: tuple[str, ...]) -> None:
        """Record the Host names the pair's workspace answers to (issue 15)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO workspace_hosts (pair_id, hosts, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (pair_id) DO UPDATE SET hosts = excluded.hosts,"
                " updated_at = excluded.updated_at",
                (pair_id, json.dumps(list(hosts)), time.time()),
            )

    def hosts(self, pair_id: str) -> tuple[str, ...] | None:
        """The pair's workspace hosts; None when none were ever recorded."""
        with self._connect() as db:
            row = db.execute(
                "SELECT hosts FROM workspace_hosts WHERE pair_id = ?", (pair_id,)
            ).fetchone()
        return None if row is None else tuple(json.loads(row["hosts"]))

    def events(self, pair_id: str) -> builtins.list[PairEvent]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT at, kind, detail FROM events WHERE pair_id = ? ORDER BY id", (pair_id,)
            ).fetchall()
        return [PairEvent(at=r["at"], kind=r["kind"], detail=r["detail"]) for r in rows]


def _pair_from_row(row: sqlite3.Row) -> Pair:
    return Pair(
        id=row["id"],
        state=PairState(row["state"]),
        gpu_generation=row["gpu_generation"],
        gpu_instance_id=row["gpu_instance_id"],
        standby_name=row["standby_name"],
        spec=json.loads(row["spec"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
