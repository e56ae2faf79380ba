"""A snapshot after a small change stores only what changed, by content, and restores alone."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from provisioning.snapshot import CreateOptions, create_snapshot, prune_snapshots, restore_snapshot
from provisioning.snapshot import create as create_module
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.stores.local import LocalStore
from tests.snapshot.trees import describe_tree, write_random

_LOG_LINES = 400_000  # about 9 MB: several content-defined chunks


@functools.cache
def _log_text() -> str:
    return "".join(f"{i:08d} step loss={i % 977 / 977:.5f}\n" for i in range(_LOG_LINES))


def _workspace(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    for number in range(200):
        (root / "src" / f"mod_{number}.py").write_text(f"VALUE = {number}\n" * 20)
    write_random(root / "models" / "weights.bin", 8 * 1024 * 1024, seed=5)
    (root / "train.log").write_text(_log_text())
    return root


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return _workspace(tmp_path / "workspace")


def test_one_line_changed_stores_about_one_chunk(workspace: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    first = create_snapshot(workspace, store)
    with (workspace / "src" / "mod_7.py").open("a") as source:
        source.write("print('one more line')\n")

    second = create_snapshot(workspace, store)

    assert second.read_bytes == (workspace / "src" / "mod_7.py").stat().st_size
    assert second.reused_files == first.snapshot.files - 1
    assert second.stored_bytes < 1024  # the one small blob, compressed
    assert second.snapshot.parent == first.snapshot.id


def test_a_line_inserted_in_a_big_log_restores_few_chunks(workspace: Path, tmp_path: Path) -> None:
    """Content-defined chunks: an insertion in the middle does not shift every later chunk."""
    store = LocalStore(tmp_path / "repo")
    first = create_snapshot(workspace, store)
    log = workspace / "train.log"
    text = log.read_text()
    middle = text.index("\n", len(text) // 2) + 1
    log.write_text(text[:middle] + "INSERTED A LINE HERE\n" + text[middle:])

    second = create_snapshot(workspace, store)

    repo = Repository.open(store, create=False)
    old_chunks, new_chunks = (
        next(e.chunks for e in repo.load_manifest(r) if e.path == "train.log")
        for r in (first.snapshot, second.snapshot)
    )
    assert len(new_chunks) >= 4
    assert len(set(new_chunks) - set(old_chunks)) <= 2  # the chunk with the insertion (or two)


def test_touch_without_change_reads_but_stores_nothing(workspace: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(workspace, store)
    os.utime(workspace / "models" / "weights.bin")  # new mtime, same bytes

    second = create_snapshot(workspace, store)

    assert second.read_bytes == 8 * 1024 * 1024
    assert second.stored_bytes == 0


def test_same_size_and_mtime_but_new_content_is_caught(workspace: Path, tmp_path: Path) -> None:
    """mtime alone would miss this rewrite; the ctime and the content do not."""
    store = LocalStore(tmp_path / "repo")
    create_snapshot(workspace, store)
    target = workspace / "src" / "mod_3.py"
    before = target.stat()
    target.write_text(target.read_text().replace("3", "4"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    create_snapshot(workspace, store)
    restored = tmp_path / "restored"
    restore_snapshot(store, "latest", restored)

    assert (restored / "src" / "mod_3.py").read_text() == "VALUE = 4\n" * 20


def test_rehash_reads_everything_and_stores_nothing_new(workspace: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(workspace, store)
    total = sum(p.stat().st_size for p in workspace.rglob("*") if p.is_file())

    again = create_snapshot(workspace, store, CreateOptions(rehash=True))

    assert again.read_bytes == total
    assert again.stored_bytes == 0


def test_each_snapshot_restores_on_its_own_after_prune(workspace: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    create_snapshot(workspace, store)
    (workspace / "src" / "mod_1.py").write_text("changed\n")
    (workspace / "models" / "weights.bin").unlink()
    second = create_snapshot(workspace, store)
    expected = describe_tree(workspace)

    prune_snapshots(store, keep=1)

    restored = tmp_path / "restored"
    restore_snapshot(store, second.snapshot.id, restored)
    assert describe_tree(restored) == expected


def test_a_crashed_run_leaves_packs_the_next_run_reuses(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index objects are written every few packs, so an interrupted upload resumes."""
    monkeypatch.setattr("provisioning.snapshot.packs._INDEX_EVERY_PACKS", 1)
    monkeypatch.setattr("provisioning.snapshot.packs.PACK_TARGET_SIZE", 1 << 20)
    store = LocalStore(tmp_path / "repo")
    real_open = create_module.open_source_file

    def crash_on_last_file(path: bytes, flags: int) -> int:
        if path.endswith(b"src/mod_99.py"):  # read last: the log and weights went before it
            raise KeyboardInterrupt  # the machine went away mid-snapshot
        return real_open(path, flags)

    monkeypatch.setattr(create_module, "open_source_file", crash_on_last_file)
    with pytest.raises(KeyboardInterrupt):
        create_snapshot(workspace, store, CreateOptions(threads=1))
    assert Repository.open(store, create=False).snapshots() == []
    stored_before = Repository.open(store, create=False).load_index()
    assert stored_before

    monkeypatch.setattr(create_module, "open_source_file", real_open)
    resumed = create_snapshot(workspace, store)

    assert resumed.stored_bytes < 1024 * 1024  # not the 8 MiB of weights, not the log again
    restored = tmp_path / "restored"
    restore_snapshot(store, "latest", restored)
    assert describe_tree(restored) == describe_tree(workspace)
