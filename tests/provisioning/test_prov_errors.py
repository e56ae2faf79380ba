"""The provisioning error tree at its boundary: a usage error and a state conflict are told apart
by the CLI's exit status, each with one line on stderr."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.errors import ProvisioningError, StateConflict, SyncError, UsageError
from provisioning.remote_snapshot import agent_archive
from provisioning.store import Pair, PairState, PairStore
from tests.provisioning.conftest import FakeClouds
from tests.provisioning.fake_vast import API_KEY

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test"


async def test_creating_a_destroyed_pair_again_is_a_state_conflict_with_its_own_exit_status(
    clouds: FakeClouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k.pub").write_text(KEY)
    store = PairStore(tmp_path / "s.db")
    store.insert(Pair("gone", PairState.DESTROYED, "dumont-gone-standby"))
    argv = [
        f"--store={tmp_path / 's.db'}", "pair", "create", "--pair=gone",
        f"--ssh-public-key={tmp_path / 'k.pub'}", f"--vast-url={clouds.vast_url}",
        f"--gcp-endpoint={clouds.gcp_url}", "--gcp-anonymous", "--gcp-project=proj",
        "--gcp-zone=us-central1-a", "--poll-interval=0.01",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAST_API_KEY", API_KEY)
        assert await asyncio.to_thread(main, argv) == StateConflict.exit_status == 3
        err = capsys.readouterr().err
        assert err == "dumont-provision: error: pair gone is destroyed; cannot create it again\n"
        assert not clouds.vast.instances  # nothing was rented
        # The same command with a bad flag is a usage error: exit 2.
        bad = [*argv, "--gcp-zone=moon-1"]
        assert await asyncio.to_thread(main, bad) == UsageError.exit_status == 2
        assert "bad zone 'moon-1'" in capsys.readouterr().err


def test_the_snapshot_agent_error_sits_in_the_documented_tree() -> None:
    import provisioning.errors as errors

    assert issubclass(errors.SnapshotAgentError, SyncError)
    documented = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in documented, f"{name} is missing from provisioning.errors' tree"
    assert issubclass(StateConflict, ProvisioningError)
    assert not issubclass(StateConflict, UsageError)


def test_the_snapshot_agent_still_carries_the_error_tree_alone() -> None:
    # The agent archive ships provisioning/errors.py without the rest of the package: the tree
    # must import nothing else of it.
    import zipfile
    from io import BytesIO

    names = zipfile.ZipFile(BytesIO(agent_archive())).namelist()
    assert "provisioning/errors.py" in names
    source = (Path(__file__).resolve().parents[2] / "provisioning" / "errors.py").read_text()
    assert "import provisioning" not in source
    assert "from provisioning" not in source
