"""A damaged repository is reported with the files it affects, never silently restored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioning.snapshot import create_snapshot, restore_snapshot
from provisioning.snapshot.errors import CorruptSnapshotError
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.stores.local import LocalStore
from tests.snapshot.trees import write_random


@pytest.fixture
def snapshotted(tmp_path: Path) -> tuple[LocalStore, Path]:
    """Two big files (their own packs' worth of chunks) and small ones sharing a pack."""
    source = tmp_path / "workspace"
    write_random(source / "models" / "a.bin", 6 * 1024 * 1024, seed=1)
    write_random(source / "models" / "b.bin", 6 * 1024 * 1024, seed=2)
    (source / "src").mkdir()
    for number in range(20):
        (source / "src" / f"m{number}.py").write_text(f"x = {number}\n" * 50)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    return store, source


def _location(store: LocalStore, path: str) -> tuple[Path, int, int]:
    """The pack file, offset and length of the first chunk of ``path``."""
    repo = Repository.open(store, create=False)
    entry = next(e for e in repo.load_manifest(repo.find_snapshot("latest")) if e.path == path)
    where = repo.load_index()[entry.chunks[0]]
    return store.root / where.pack, where.offset, where.length


def _files_sharing_pack(store: LocalStore, pack: Path) -> set[str]:
    repo = Repository.open(store, create=False)
    index = repo.load_index()
    entries = repo.load_manifest(repo.find_snapshot("latest"))
    name = pack.relative_to(store.root).as_posix()
    return {e.path for e in entries if any(index[c].pack == name for c in e.chunks)}


def test_a_flipped_byte_is_caught_and_names_the_file(
    snapshotted: tuple[LocalStore, Path], tmp_path: Path
) -> None:
    store, _source = snapshotted
    pack, offset, length = _location(store, "src/m3.py")
    data = bytearray(pack.read_bytes())
    data[offset + length // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    target = tmp_path / "restored"

    with pytest.raises(CorruptSnapshotError) as caught:
        restore_snapshot(store, "latest", target)

    assert caught.value.files == ["src/m3.py"]
    assert "src/m3.py" in str(caught.value)
    assert not (target / "src" / "m3.py").exists()  # not left behind with wrong content
    assert (target / "src" / "m4.py").read_text() == "x = 4\n" * 50  # the rest is restored


def test_a_truncated_pack_names_every_file_it_held(
    snapshotted: tuple[LocalStore, Path], tmp_path: Path
) -> None:
    store, _source = snapshotted
    pack, offset, _length = _location(store, "models/b.bin")
    affected = _files_sharing_pack(store, pack)
    with pack.open("r+b") as handle:
        handle.truncate(offset + 10)

    with pytest.raises(CorruptSnapshotError) as caught:
        restore_snapshot(store, "latest", tmp_path / "restored")

    assert "models/b.bin" in caught.value.files
    assert set(caught.value.files) <= affected
    assert not (tmp_path / "restored" / "models" / "b.bin").exists()


def test_a_missing_pack_is_reported(snapshotted: tuple[LocalStore, Path], tmp_path: Path) -> None:
    store, _source = snapshotted
    pack, _offset, _length = _location(store, "models/a.bin")
    affected = _files_sharing_pack(store, pack)
    pack.unlink()

    with pytest.raises(CorruptSnapshotError) as caught:
        restore_snapshot(store, "latest", tmp_path / "restored")

    assert set(caught.value.files) == affected


def test_a_tampered_manifest_is_refused(
    snapshotted: tuple[LocalStore, Path], tmp_path: Path
) -> None:
    store, _source = snapshotted
    record = Repository.open(store, create=False).find_snapshot("latest")
    manifest = store.root / record.manifest
    manifest.write_bytes(manifest.read_bytes()[:-8])

    with pytest.raises(CorruptSnapshotError, match="manifest"):
        restore_snapshot(store, "latest", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_path_escaping_the_target_is_refused(
    snapshotted: tuple[LocalStore, Path], tmp_path: Path
) -> None:
    """A forged snapshot (manifest and record rewritten consistently) cannot write outside."""
    store, _source = snapshotted
    repo = Repository.open(store, create=False)
    record = repo.find_snapshot("latest")
    entries = repo.load_manifest(record)
    forged = [entries[0].__class__(**{**_fields(entries[0]), "path": "../escaped"}), *entries[1:]]
    name, digest = repo.save_manifest(forged)
    document = json.loads(record.to_bytes())
    document.update(manifest=name, manifest_hash=digest)
    (store.root / "snapshots" / f"{record.id}.json").write_text(json.dumps(document))

    with pytest.raises(CorruptSnapshotError, match="outside its tree") as caught:
        restore_snapshot(store, "latest", tmp_path / "restored")
    assert caught.value.files == ["../escaped"]
    assert not (tmp_path / "escaped").exists()


def _fields(entry: object) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}  # type: ignore[attr-defined]
