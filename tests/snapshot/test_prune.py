"""prune keeps the N latest snapshots and frees everything only the others needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.snapshot import create_snapshot, prune_snapshots, restore_snapshot
from provisioning.snapshot.errors import SnapshotError
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.stores.local import LocalStore
from tests.snapshot.trees import describe_tree, write_random


def _stored_bytes(store: LocalStore) -> int:
    return sum(path.stat().st_size for path in (store.root / "packs").rglob("*") if path.is_file())


def _needed(repo: Repository) -> set[str]:
    return {c for r in repo.snapshots() for e in repo.load_manifest(r) for c in e.chunks}


def test_prune_frees_exactly_what_no_kept_snapshot_needs(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    store = LocalStore(tmp_path / "repo")
    trees = []
    for generation in range(3):
        # Each generation replaces the weights and keeps the small files mostly the same.
        write_random(source / "weights.bin", 3 * 1024 * 1024, seed=generation)
        (source / "notes.txt").write_text(f"generation {generation}\n")
        (source / "stable.txt").write_text("never changes\n" * 100)
        create_snapshot(source, store)
        trees.append(describe_tree(source))
    before = _stored_bytes(store)

    result = prune_snapshots(store, keep=1)

    repo = Repository.open(store, create=False)
    assert [r.id for r in repo.snapshots()] == result.kept
    assert len(result.removed) == 2
    assert set(repo.load_index()) == _needed(repo)  # no blob that only the removed ones used
    assert _stored_bytes(store) < before / 2  # two generations of weights are gone
    assert result.freed_bytes > 5 * 1024 * 1024
    restore_snapshot(store, "latest", tmp_path / "restored")
    assert describe_tree(tmp_path / "restored") == trees[-1]
    assert len(store.list("manifests/")) == 1
    assert len(store.list("index/")) == 1


def test_prune_keeping_everything_changes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    write_random(source / "weights.bin", 1024 * 1024, seed=1)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    before = _stored_bytes(store)

    result = prune_snapshots(store, keep=3)

    assert result.removed == []
    assert result.deleted_packs == 0
    assert _stored_bytes(store) == before


def test_prune_refuses_to_keep_nothing(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    source.mkdir()
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    with pytest.raises(SnapshotError, match="at least 1"):
        prune_snapshots(store, keep=0)
