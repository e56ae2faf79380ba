"""The standby over SSH as a destination: a real sshd on loopback, only bash on the far side."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.snapshot import (
    DestinationOptions,
    create_snapshot,
    list_snapshots,
    open_destination,
    restore_latest,
)
from provisioning.snapshot.errors import CorruptSnapshotError, DestinationError
from provisioning.snapshot.stores.ssh import SshStore
from tests.snapshot.conftest import RunCli, Standby
from tests.snapshot.trees import describe_tree, make_rich_tree, write_random

pytestmark = pytest.mark.slow


def _store(standby: Standby, name: str = "repo") -> SshStore:
    store = open_destination(standby.destination(name), DestinationOptions(standby.config))
    assert isinstance(store, SshStore)
    return store


def test_round_trip_through_the_standby(standby: Standby, tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    make_rich_tree(source)
    store = _store(standby)
    try:
        created = create_snapshot(source, store)
        with (source / "src" / "pkg" / "mod_3.py").open("a") as changed:
            changed.write("# one more line\n")
        second = create_snapshot(source, store)
    finally:
        store.close()

    assert second.stored_bytes < 1024
    assert (standby.root / "repo" / created.snapshot.manifest).is_file()
    target = tmp_path / "restored"
    result = restore_latest(
        standby.destination(), target, options=DestinationOptions(standby.config)
    )
    assert result.snapshot.id == second.snapshot.id
    assert describe_tree(target) == describe_tree(source)


def test_cli_against_the_standby(snapshot_cli: RunCli, standby: Standby, tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    write_random(source / "weights.bin", 2 * 1024 * 1024, seed=9)
    common = ["-d", standby.destination(), "--ssh-config", str(standby.config)]
    assert snapshot_cli("create", str(source), *common).code == 0
    write_random(source / "weights.bin", 2 * 1024 * 1024, seed=10)
    assert snapshot_cli("create", str(source), *common).code == 0
    assert snapshot_cli("prune", "--keep", "1", *common).code == 0
    assert len(list_snapshots(standby.destination(), DestinationOptions(standby.config))) == 1
    restored = snapshot_cli("restore", "latest", str(tmp_path / "out"), *common)
    assert restored.code == 0, restored.err
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (source / "weights.bin").read_bytes()
    packs = list((standby.root / "repo" / "packs").rglob("*"))
    assert sum(p.stat().st_size for p in packs if p.is_file()) < 3 * 1024 * 1024


def test_corruption_on_the_standby_is_reported(standby: Standby, tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    write_random(source / "a.bin", 100_000, seed=1)
    store = _store(standby)
    try:
        create_snapshot(source, store)
    finally:
        store.close()
    pack = next(p for p in (standby.root / "repo" / "packs").rglob("*") if p.is_file())
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))

    with pytest.raises(CorruptSnapshotError) as caught:
        restore_latest(
            standby.destination(), tmp_path / "out", options=DestinationOptions(standby.config)
        )
    assert caught.value.files == ["a.bin"]


def test_unreachable_standby_is_one_line(tmp_path: Path, standby: Standby) -> None:
    config = tmp_path / "bad_config"
    config.write_text(
        standby.config.read_text().replace("Port ", "Port 1") + "  ConnectTimeout 2\n"
    )
    store = open_destination(standby.destination(), DestinationOptions(config))
    try:
        with pytest.raises(DestinationError, match="cannot reach ssh://standby"):
            store.check_writable()
    finally:
        store.close()
