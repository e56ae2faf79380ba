"""A GCS bucket as destination: the real httpx client against a fake of the JSON API wire format."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from provisioning.retry import RetryPolicy
from provisioning.snapshot import create_snapshot, open_destination, restore_snapshot
from provisioning.snapshot.errors import UploadError
from provisioning.snapshot.stores import gcs as gcs_module
from provisioning.snapshot.stores.gcs import GcsStore
from tests.snapshot.conftest import RunCli
from tests.snapshot.fake_gcs import GRANULARITY, FakeGcs
from tests.snapshot.trees import describe_tree, make_rich_tree, write_random

_TOKEN = "ya29.secret-token-that-must-never-be-logged"


def _store(fake: FakeGcs, **overrides: object) -> GcsStore:
    retry = RetryPolicy(attempts=7, base_delay=0.01)
    options: dict[str, object] = {"retry": retry, "token_provider": lambda: _TOKEN}
    options.update(overrides)
    return GcsStore(fake.bucket, "team/ws1", endpoint=fake.endpoint, **options)  # type: ignore[arg-type]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MiB upload chunks, so a few-MiB object takes several PUTs."""
    monkeypatch.setattr(gcs_module, "UPLOAD_CHUNK", 4 * GRANULARITY)


def test_round_trip_through_a_bucket(fake_gcs: FakeGcs, tmp_path: Path) -> None:
    source = tmp_path / "workspace"
    make_rich_tree(source)
    store = _store(fake_gcs)
    try:
        created = create_snapshot(source, store)
        restore_snapshot(store, created.snapshot.id, tmp_path / "restored")
    finally:
        store.close()

    assert describe_tree(tmp_path / "restored") == describe_tree(source)
    assert all(name.startswith("team/ws1/") for name in fake_gcs.objects)
    assert f"team/ws1/{created.snapshot.manifest}" in fake_gcs.objects
    assert fake_gcs.authorizations == {f"Bearer {_TOKEN}"}


def test_upload_resumes_after_a_dropped_connection(
    fake_gcs: FakeGcs, small_chunks: None, tmp_path: Path
) -> None:
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB: five 1 MiB chunks
    fake_gcs.faults = ["drop"]
    store = _store(fake_gcs)
    try:
        store.put("packs/ab/abc", data)
    finally:
        store.close()

    assert fake_gcs.objects["team/ws1/packs/ab/abc"] == data
    assert fake_gcs.status_queries == 1
    # Resumed where the server stood: half of the dropped chunk was not sent again... and
    # nothing before it either. 5 MiB plus at most the unconfirmed half chunk crossed the wire.
    assert fake_gcs.bytes_received <= len(data) + 2 * GRANULARITY + 1


def test_upload_survives_server_errors_and_partial_commits(
    fake_gcs: FakeGcs, small_chunks: None
) -> None:
    data = b"x" * (3 * 1024 * 1024 + 12345)
    fake_gcs.faults = ["503", "partial", "drop", "503"]
    store = _store(fake_gcs)
    try:
        store.put("index/abc.json", data)
    finally:
        store.close()
    assert fake_gcs.objects["team/ws1/index/abc.json"] == data


def test_snapshot_with_failures_mid_upload_restores_exactly(
    fake_gcs: FakeGcs, small_chunks: None, tmp_path: Path
) -> None:
    source = tmp_path / "workspace"
    write_random(source / "weights.bin", 6 * 1024 * 1024, seed=8)
    (source / "notes.txt").write_text("notes\n" * 1000)
    fake_gcs.faults = ["drop", "503", "partial", "drop"]
    store = _store(fake_gcs)
    try:
        created = create_snapshot(source, store)
        restore_snapshot(store, created.snapshot.id, tmp_path / "restored")
    finally:
        store.close()
    assert fake_gcs.faults == []  # every injected failure was hit
    assert describe_tree(tmp_path / "restored") == describe_tree(source)


def test_a_download_that_breaks_resumes_with_a_range_request(
    fake_gcs: FakeGcs, tmp_path: Path
) -> None:
    source = tmp_path / "workspace"
    write_random(source / "weights.bin", 3 * 1024 * 1024, seed=12)
    store = _store(fake_gcs)
    try:
        create_snapshot(source, store)
        fake_gcs.download_drops = 3
        restore_snapshot(store, "latest", tmp_path / "restored")
    finally:
        store.close()
    assert fake_gcs.download_drops == 0
    assert fake_gcs.ranged_downloads >= 1
    restored = (tmp_path / "restored" / "weights.bin").read_bytes()
    assert restored == (source / "weights.bin").read_bytes()


def test_an_upload_that_keeps_failing_is_one_line_and_secret_free(
    fake_gcs: FakeGcs, small_chunks: None, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gcs.faults = ["503"] * 50
    store = _store(fake_gcs, retry=RetryPolicy(attempts=3, base_delay=0.01))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(UploadError) as caught:
            store.put("packs/cd/cdef", b"y" * (2 * 1024 * 1024))
    finally:
        store.close()
    message = str(caught.value)
    assert "\n" not in message
    assert "packs/cd/cdef" in message
    session_ids = list(fake_gcs.sessions)
    everything_logged = caplog.text + message
    assert session_ids
    for secret in [_TOKEN, *session_ids]:
        assert secret not in everything_logged
    assert "upload_id=<redacted>" in caplog.text  # httpx did log the request, without the id


def test_listing_follows_pages(fake_gcs: FakeGcs) -> None:
    store = _store(fake_gcs)
    try:
        for number in range(20):  # the fake pages every 7 objects
            store.put(f"snapshots/{number:02d}.json", b"{}")
        assert store.list("snapshots/") == [f"snapshots/{n:02d}.json" for n in range(20)]
        store.delete(["snapshots/03.json"])
        assert "snapshots/03.json" not in store.list("snapshots/")
    finally:
        store.close()


def test_cli_uses_the_emulator_variable(
    snapshot_cli: RunCli, fake_gcs: FakeGcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    source = tmp_path / "workspace"
    source.mkdir()
    (source / "a.txt").write_text("hello\n")
    destination = f"gs://{fake_gcs.bucket}/cli"
    assert snapshot_cli("create", str(source), "-d", destination).code == 0
    restored = snapshot_cli("restore", "latest", str(tmp_path / "out"), "-d", destination)
    assert restored.code == 0, restored.err
    assert (tmp_path / "out" / "a.txt").read_text() == "hello\n"
    assert isinstance(open_destination(destination), GcsStore)


def test_unknown_bucket_is_one_line(
    snapshot_cli: RunCli, fake_gcs: FakeGcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    source = tmp_path / "workspace"
    source.mkdir()
    result = snapshot_cli("create", str(source), "-d", "gs://no-such-bucket/x")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "gs://no-such-bucket/x" in result.err
