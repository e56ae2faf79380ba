"""Small files are restored whole by a pool of writers: modes, owners and mtimes must be exact.

The writers create each file with its permission bits and set owner and mode only when the kernel
did not already give the right ones (umask, set-group-ID directories), so these trees hold exactly
the cases where skipping a call would be wrong.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioning.snapshot import create_snapshot, restore_snapshot
from provisioning.snapshot.stores.local import LocalStore
from provisioning.snapshot.writing import Ownership, current_umask
from tests.snapshot.trees import describe_tree

# Modes that a umask of 022 (or 077) strips, special bits, and modes a writer cannot reopen.
_MODES = [0o644, 0o755, 0o666, 0o777, 0o600, 0o444, 0o000, 0o4755, 0o2755, 0o1777, 0o640]


def _many_small_files(root: Path) -> None:
    """More files than one writer batch, over several directories, same content in many."""
    for number in range(300):
        path = root / f"d{number % 7}" / f"f{number:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {number}\n" if number % 3 else "shared content\n")
        os.chmod(path, _MODES[number % len(_MODES)])
        os.utime(path, ns=(1_500_000_000_123_456_789 + number * 7_919,) * 2)
    (root / "empty").write_bytes(b"")
    (root / "zeros").write_bytes(bytes(5000))  # one all-zero blob: restored as a hole
    for number, directory in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        os.utime(directory, ns=(1_400_000_000_000_000_000 + number,) * 2)


def _owners(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_uid, path.lstat().st_gid)
        for path in root.rglob("*")
    }


def test_modes_and_mtimes_of_many_small_files(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    _many_small_files(source)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    target = tmp_path / "restored"

    restore_snapshot(store, "latest", target, threads=3)

    assert describe_tree(target) == describe_tree(source)
    assert stat.S_IMODE((target / "d0" / "f000.txt").stat().st_mode) == _MODES[0]


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o027])
def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    source = tmp_path / "workspace"
    _many_small_files(source)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        restore_snapshot(store, "latest", tmp_path / "restored")
    finally:
        os.umask(previous)

    assert describe_tree(tmp_path / "restored") == describe_tree(source)


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are restored only as root")
def test_owners_are_restored_as_root(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    _many_small_files(source)
    for number, path in enumerate(sorted(source.rglob("f*.txt"))):
        if number % 4 == 1:
            os.chown(path, 1234, 5678)
        elif number % 4 == 2:
            os.chown(path, 0, 5678)  # only the group differs
    os.chown(source / "d3", 4321, 8765)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    target = tmp_path / "restored"

    restore_snapshot(store, "latest", target)

    assert _owners(target) == _owners(source)
    assert describe_tree(target) == describe_tree(source)


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are restored only as root")
def test_a_set_group_id_target_does_not_hand_its_group_down(tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    _many_small_files(source)
    store = LocalStore(tmp_path / "repo")
    create_snapshot(source, store)
    target = tmp_path / "restored"
    target.mkdir()
    os.chown(target, 0, 4242)
    os.chmod(target, 0o2775)  # new files in it get group 4242, not root's

    restore_snapshot(store, "latest", target)

    assert _owners(target) == _owners(source)
    assert describe_tree(target) == describe_tree(source)


def test_the_probe_sees_what_new_files_get(tmp_path: Path) -> None:
    ownership = Ownership.probe(os.fsencode(tmp_path), trust_new_files=True)
    made = tmp_path / "made"
    made.write_bytes(b"")
    info = made.stat()
    assert list(tmp_path.iterdir()) == [made]  # the probe file is gone
    if os.geteuid() == 0:
        assert (ownership.uid, ownership.gid) == (info.st_uid, info.st_gid)
    else:
        assert not ownership.as_root
