"""The command line: the four verbs, progress, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.snapshot.conftest import CliResult, RunCli


def _one_line_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    tree = tmp_path / "workspace"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "app.py").write_text("print('hello')\n")
    return tree


def test_create_list_restore_prune(snapshot_cli: RunCli, source: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    first = snapshot_cli("create", str(source), "-d", repo)
    assert first.code == 0
    assert first.out.startswith("snapshot ")
    (source / "src" / "app.py").write_text("print('hello again')\n")
    assert snapshot_cli("create", str(source), "-d", repo).code == 0

    listing = snapshot_cli("list", "-d", repo, "--json")
    records = json.loads(listing.out)
    assert [r["files"] for r in records] == [1, 1]
    table = snapshot_cli("list", "-d", repo)
    assert records[0]["id"] in table.out
    assert records[1]["id"] in table.out

    target = tmp_path / "restored"
    # A unique prefix: two snapshots taken in the same second share the time part of the id
    # and, one time in sixteen, the first hex digit after it.
    first_id, second_id = records[0]["id"], records[1]["id"]
    prefix = next(
        first_id[:n] for n in range(18, len(first_id)) if not second_id.startswith(first_id[:n])
    )
    restored = snapshot_cli("restore", prefix, str(target), "-d", repo)
    assert restored.code == 0, restored.err
    assert (target / "src" / "app.py").read_text() == "print('hello')\n"

    pruned = snapshot_cli("prune", "--keep", "1", "-d", repo)
    assert pruned.code == 0
    assert "removed 1" in pruned.out
    assert len(json.loads(snapshot_cli("list", "-d", repo, "--json").out)) == 1


def test_progress_reports_bytes_files_rate_and_eta(
    snapshot_cli: RunCli, source: Path, tmp_path: Path
) -> None:
    result = snapshot_cli("create", str(source), "-d", str(tmp_path / "repo"), "--progress")
    assert result.code == 0
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("snapshot create: 15 B / 15 B, 1/1 files, ")
    assert "/s, ETA " in last


def test_missing_source_is_one_line(snapshot_cli: RunCli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = snapshot_cli("create", str(missing), "-d", str(tmp_path / "repo"))
    _one_line_error(result, str(missing), "does not exist")


def test_source_that_is_a_file_is_one_line(snapshot_cli: RunCli, tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    result = snapshot_cli("create", str(afile), "-d", str(tmp_path / "repo"))
    _one_line_error(result, "is not a directory")


def test_unwritable_destination_is_one_line(
    snapshot_cli: RunCli, source: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    result = snapshot_cli("create", str(source), "-d", str(blocker / "repo"))
    _one_line_error(result, str(blocker / "repo"), "not writable")


def test_unknown_snapshot_is_one_line(snapshot_cli: RunCli, source: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    snapshot_cli("create", str(source), "-d", repo)
    result = snapshot_cli("restore", "20990101T000000Z-deadbeef", str(tmp_path / "out"), "-d", repo)
    _one_line_error(result, "20990101T000000Z-deadbeef", "does not exist")


def test_listing_a_directory_without_a_repository_is_one_line(
    snapshot_cli: RunCli, tmp_path: Path
) -> None:
    result = snapshot_cli("list", "-d", str(tmp_path))
    _one_line_error(result, "holds no snapshot repository")


def test_no_destination_is_one_line(snapshot_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUMONT_SNAPSHOT_DESTINATION", raising=False)
    _one_line_error(snapshot_cli("list"), "no destination")


def test_bad_scheme_is_one_line(snapshot_cli: RunCli) -> None:
    _one_line_error(snapshot_cli("list", "-d", "ftp://host/x"), "unknown scheme 'ftp'")


def test_restore_into_non_empty_directory_is_one_line(
    snapshot_cli: RunCli, source: Path, tmp_path: Path
) -> None:
    repo = str(tmp_path / "repo")
    snapshot_cli("create", str(source), "-d", repo)
    result = snapshot_cli("restore", "latest", str(source), "-d", repo)
    _one_line_error(result, "is not empty", "--overwrite")


def test_the_real_entry_point_runs_the_snapshot_verbs(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through provisioning.cli.main, as `dumont-provision snapshot ...` runs."""
    from provisioning.cli import main

    repo = str(tmp_path / "repo")
    assert main(["snapshot", "create", str(source), "-d", repo, "--no-progress"]) == 0
    assert main(["snapshot", "restore", "latest", str(tmp_path / "out"), "-d", repo]) == 0
    assert (tmp_path / "out" / "src" / "app.py").read_text() == "print('hello')\n"
    capsys.readouterr()
    assert main(["snapshot", "restore", "nope", str(tmp_path / "out2"), "-d", repo]) == 2
    assert capsys.readouterr().err.count("\n") == 1
