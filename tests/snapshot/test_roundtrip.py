"""A snapshot restores the tree exactly: contents, modes, mtimes, links, sparse files, odd names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioning.snapshot import CreateOptions, create_snapshot, restore_snapshot
from provisioning.snapshot.errors import TargetNotEmptyError
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.stores.local import LocalStore
from tests.snapshot.trees import NON_UTF8_NAME, describe_tree, make_rich_tree


@pytest.fixture
def rich_tree(tmp_path: Path) -> Path:
    source = tmp_path / "workspace"
    make_rich_tree(source)
    return source


def test_restore_recreates_the_tree_exactly(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    created = create_snapshot(rich_tree, store)
    target = tmp_path / "restored"

    restored = restore_snapshot(store, created.snapshot.id, target)

    assert describe_tree(target) == describe_tree(rich_tree)
    assert restored.files == created.snapshot.files
    assert os.path.exists(os.path.join(os.fsencode(target), NON_UTF8_NAME))


def test_hard_links_stay_one_file(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(rich_tree, store)
    target = tmp_path / "restored"
    restore_snapshot(store, "latest", target)

    original = target / "src" / "pkg" / "mod_2.py"
    assert os.stat(original).st_ino == os.stat(target / "hard-link-to-mod2.py").st_ino


def test_sparse_file_comes_back_sparse(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(rich_tree, store)
    target = tmp_path / "restored"
    restore_snapshot(store, "latest", target)

    restored = os.stat(target / "sparse.img")
    assert restored.st_size == 64 * 1024 * 1024
    assert restored.st_blocks * 512 < 8 * 1024 * 1024  # the 64 MiB of zeros did not get written


def test_sockets_and_fifos_are_skipped_and_reported(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    record = create_snapshot(rich_tree, store).snapshot
    assert sorted(w.split(":")[0] for w in record.warnings) == ["a-fifo", "a-socket"]
    target = tmp_path / "restored"
    restore_snapshot(store, "latest", target)
    assert not (target / "a-socket").exists()
    assert not (target / "a-fifo").exists()


def test_excludes_by_name_and_by_path(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    options = CreateOptions(excludes=("*.log", "src/pkg/mod_1*"))
    create_snapshot(rich_tree, store, options)
    target = tmp_path / "restored"
    restore_snapshot(store, "latest", target)

    assert not (target / "logs" / "train.log").exists()
    assert (target / "logs").is_dir()
    assert not (target / "src" / "pkg" / "mod_1.py").exists()
    assert not (target / "src" / "pkg" / "mod_10.py").exists()
    assert (target / "src" / "pkg" / "mod_2.py").exists()


def test_repository_inside_the_source_is_not_snapshotted(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(rich_tree / ".snapshots")
    create_snapshot(rich_tree, store)
    create_snapshot(rich_tree, store)
    entries = Repository.open(store, create=False)
    record = entries.find_snapshot("latest")
    assert not any(e.path.startswith(".snapshots") for e in entries.load_manifest(record))


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    source.mkdir()
    payload = os.urandom(2 * 1024 * 1024)
    for number in range(5):
        (source / f"copy-{number}.bin").write_bytes(payload)
    store = LocalStore(tmp_path / "repo")

    result = create_snapshot(source, store)

    assert result.stored_bytes < 2 * len(payload)  # five copies, stored once (raw: incompressible)


def test_restore_refuses_a_non_empty_target_unless_told(rich_tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(rich_tree, store)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "left-over.txt").write_text("mine\n")
    (target / "script.sh").write_text("stale content\n")

    with pytest.raises(TargetNotEmptyError, match="not empty"):
        restore_snapshot(store, "latest", target)
    restore_snapshot(store, "latest", target, overwrite=True)

    assert (target / "script.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (target / "left-over.txt").read_text() == "mine\n"


def test_whole_raw_chunks_are_packs_of_their_own_on_a_local_disk(tmp_path: Path) -> None:
    """Model weights skip the pack buffer locally; they still dedupe and restore exactly."""
    source = tmp_path / "workspace"
    source.mkdir()
    weights = os.urandom(9 * 1024 * 1024 + 5)  # two whole 4 MiB chunks and a short tail
    (source / "a.safetensors").write_bytes(weights)
    (source / "b.safetensors").write_bytes(weights)
    (source / "small.txt").write_text("beside the weights\n")
    store = LocalStore(tmp_path / "repo")

    result = create_snapshot(source, store)

    assert result.stored_bytes < len(weights) + 4096  # the second copy is not stored again
    index = Repository.open(store, create=False).load_index()
    alone = [where for where in index.values() if where.length == 4 * 1024 * 1024]
    assert len(alone) == 2
    assert all(where.offset == 0 and where.codec == "raw" for where in alone)
    assert len({where.pack for where in alone}) == 2
    target = tmp_path / "restored"
    restore_snapshot(store, "latest", target)
    assert describe_tree(target) == describe_tree(source)
