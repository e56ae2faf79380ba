"""Files that change while they are read are read again, and reported when they never settle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioning.snapshot import create as create_module
from provisioning.snapshot import create_snapshot, restore_snapshot
from provisioning.snapshot.stores.local import LocalStore
from tests.snapshot.trees import write_random


def _append_when_opened(monkeypatch: pytest.MonkeyPatch, name: bytes, times: int) -> list[int]:
    """Appends to ``name`` right after each of its first ``times`` opens: a writer racing us."""
    real_open = create_module.open_source_file
    opened: list[int] = []

    def racing_open(path: bytes, flags: int) -> int:
        descriptor = real_open(path, flags)
        if path.endswith(name):
            opened.append(1)
            if len(opened) <= times:
                with open(path, "ab") as writer:
                    writer.write(b"written during the snapshot\n" * 1000)
        return descriptor

    monkeypatch.setattr(create_module, "open_source_file", racing_open)
    return opened


@pytest.mark.parametrize("size", [10_000, 3 * 1024 * 1024], ids=["small", "chunked"])
def test_a_file_that_settles_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    source = tmp_path / "workspace"
    write_random(source / "growing.bin", size, seed=3)
    opened = _append_when_opened(monkeypatch, b"growing.bin", times=1)
    store = LocalStore(tmp_path / "repo")

    result = create_snapshot(source, store)

    assert len(opened) == 2
    assert result.snapshot.warnings == []
    restore_snapshot(store, "latest", tmp_path / "restored")
    expected = (source / "growing.bin").read_bytes()
    assert (tmp_path / "restored" / "growing.bin").read_bytes() == expected


def test_a_file_that_never_settles_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "workspace"
    write_random(source / "busy.log", 50_000, seed=4)
    (source / "quiet.txt").write_text("calm\n")
    opened = _append_when_opened(monkeypatch, b"busy.log", times=100)
    store = LocalStore(tmp_path / "repo")

    result = create_snapshot(source, store)

    assert len(opened) == 4  # the first read and three retries
    assert result.snapshot.warnings == ["busy.log: changed while read 4 times; stored as last read"]
    restore_snapshot(store, "latest", tmp_path / "restored")
    restored = (tmp_path / "restored" / "busy.log").read_bytes()
    # What was stored is what the last read saw: all four appends (each came right after open).
    assert len(restored) == 50_000 + 4 * len(b"written during the snapshot\n" * 1000)


def test_a_file_deleted_during_the_snapshot_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "workspace"
    source.mkdir()
    (source / "gone.txt").write_text("here at scan time\n")
    os.link(source / "gone.txt", source / "z-twin.txt")  # a hard link to the vanishing path
    (source / "stays.txt").write_text("stays\n")
    real_open = create_module.open_source_file

    def vanishing_open(path: bytes, flags: int) -> int:
        if path.endswith(b"gone.txt"):
            os.unlink(path)
        return real_open(path, flags)

    monkeypatch.setattr(create_module, "open_source_file", vanishing_open)
    store = LocalStore(tmp_path / "repo")
    result = create_snapshot(source, store)

    assert result.snapshot.warnings == ["gone.txt: vanished while snapshotting"]
    assert result.snapshot.files == 1
    restore_snapshot(store, "latest", tmp_path / "restored")  # no link to a missing file
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["stays.txt"]


def test_a_small_file_that_grows_big_while_read_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small at scan time (read in a batch), big by the time it is opened: read again, chunked."""
    source = tmp_path / "workspace"
    write_random(source / "grows.bin", 4096, seed=5)
    for number in range(100):  # the rest of its batch, read and stored as usual
        (source / f"other-{number:03d}.txt").write_text(f"other {number}\n")
    real_open = create_module.open_source_file
    grown: list[int] = []

    def growing_open(path: bytes, flags: int) -> int:
        if path.endswith(b"grows.bin") and not grown:
            grown.append(1)
            with open(path, "ab") as writer:
                writer.write(os.urandom(3 * 1024 * 1024))
        return real_open(path, flags)

    monkeypatch.setattr(create_module, "open_source_file", growing_open)
    store = LocalStore(tmp_path / "repo")

    result = create_snapshot(source, store)

    assert result.snapshot.warnings == []
    assert result.snapshot.files == 101
    restore_snapshot(store, "latest", tmp_path / "restored")
    expected = (source / "grows.bin").read_bytes()
    assert len(expected) == 4096 + 3 * 1024 * 1024
    assert (tmp_path / "restored" / "grows.bin").read_bytes() == expected
    assert (tmp_path / "restored" / "other-042.txt").read_text() == "other 42\n"
