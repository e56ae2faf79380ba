"""``dumont-provision``: one-line errors for bad input, rendered configs and scripts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.errors import UsageError
from provisioning.remote_snapshot import agent_archive
from provisioning.startup_script import CODE_SERVER_INSTALLER, render_startup_script
from provisioning.store import PairStore
from tests.provisioning.conftest import FakeClouds
from tests.provisioning.fake_vast import API_KEY

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdumont test"


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # exactly one line
    return err.strip()


def test_unknown_pair(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = error_line(capsys, [f"--store={tmp_path / 's.db'}", "pair", "show", "--pair", "nope"])
    assert line == "dumont-provision: error: unknown pair 'nope'"


def test_missing_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "k")
    base = [f"--store={tmp_path / 's.db'}", "pair", "create", "--pair", "p1"]
    assert "missing key: --ssh-public-key" in error_line(capsys, base)
    missing = str(tmp_path / "absent.pub")
    assert f"missing key: cannot read {missing}" in error_line(
        capsys, [*base, "--ssh-public-key", missing]
    )
    monkeypatch.delenv("VAST_API_KEY")
    (tmp_path / "k.pub").write_text(KEY)
    line = error_line(capsys, [*base, "--ssh-public-key", str(tmp_path / "k.pub")])
    assert "missing Vast.ai API key" in line
    sync = ["sync", "fence", "--gpu", "root@h", "--standby", "root@s", "--key", missing]
    assert f"missing SSH key {missing}" in error_line(capsys, sync)


def test_bad_zone_and_bad_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "k")
    (tmp_path / "k.pub").write_text(KEY)
    argv = [f"--store={tmp_path / 's.db'}", "pair", "create", "--pair", "p1"]
    argv += ["--ssh-public-key", str(tmp_path / "k.pub"), "--gcp-project", "p"]
    assert "bad zone 'moon-1'" in error_line(capsys, [*argv, "--gcp-zone", "moon-1"])
    monkeypatch.setenv("DUMONT_PROVISION_GCP_ZONE", "nowhere")
    assert "bad zone 'nowhere'" in error_line(capsys, argv)  # env is read too
    assert "bad pair id 'P 1'" in error_line(
        capsys, [f"--store={tmp_path / 's.db'}", "pair", "create", "--pair", "P 1"]
    )
    sync = ["sync", "render", "--gpu", "root@h:99999", "--standby", "root@s"]
    assert "bad --gpu port 99999" in error_line(capsys, sync)
    sync = ["sync", "render", "--gpu", "root@h", "--standby", "root@s", "--delay", "0"]
    assert "bad sync delay 0.0" in error_line(capsys, sync)


def test_config_file_supplies_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "dumont.toml"
    config.write_text(
        '[provisioning]\ngpu = "root@gpu.example:2222"\nstandby = "dumont@cpu.example"\n'
        'delay = 0.2\nworkspace = "/home/coder/project"\nuser-data = "none"\n'
        'exclude = ["*.ckpt", "wandb/"]\n'
    )
    assert main(["--config", str(config), "sync", "render"]) == 0
    rendered = capsys.readouterr().out
    assert "delay = 0.2," in rendered
    assert 'source = "/home/coder/project/",' in rendered
    assert 'host = "dumont@cpu.example",' in rendered
    assert "insist = true," in rendered
    assert "statusFile" in rendered
    assert 'delete = "running",' in rendered
    assert '"__pycache__/"' in rendered
    assert '"*.sock"' in rendered
    assert "update = true" in rendered
    assert '"*.ckpt", "wandb/" }' in rendered
    config.write_text("[provisioning\n")
    assert "bad config file" in error_line(capsys, ["--config", str(config), "sync", "render"])


def test_lists_and_shows_pairs_from_the_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from provisioning.store import Pair, PairState

    store = PairStore(tmp_path / "s.db")
    store.insert(Pair("alice", PairState.READY, "dumont-alice-standby", gpu_instance_id=7))
    store.record("alice", "ready", "92 s")
    assert main([f"--store={tmp_path / 's.db'}", "pair", "list"]) == 0
    assert capsys.readouterr().out == "alice\tready\tgpu=7\tstandby=dumont-alice-standby\n"
    assert main([f"--store={tmp_path / 's.db'}", "pair", "show", "--pair", "alice"]) == 0
    assert "ready 92 s" in capsys.readouterr().out


def test_standby_startup_script_embeds_the_code_server_installer() -> None:
    script = render_startup_script(pair_id="p1", ssh_user="dumont", ssh_public_key=KEY)
    assert CODE_SERVER_INSTALLER.read_text().rstrip("\n") in script
    for package in ("rsync", "lsyncd", "openssh-server"):
        assert package in script
    assert KEY in script
    assert "ExecStart=/opt/dumont/code-server/bin/code-server --auth password" in script
    with pytest.raises(UsageError, match="bad SSH public key"):
        render_startup_script(pair_id="p1", ssh_user="dumont", ssh_public_key="nonsense")


async def test_pair_create_and_destroy_show_progress(
    clouds: FakeClouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k.pub").write_text(KEY)
    common = [
        f"--vast-url={clouds.vast_url}", f"--gcp-endpoint={clouds.gcp_url}", "--gcp-anonymous",
        "--gcp-project=proj", "--gcp-zone=us-central1-a", "--poll-interval=0.01",
    ]  # fmt: skip
    store = f"--store={tmp_path / 's.db'}"
    create = [store, "pair", "create", "--pair=p1", f"--ssh-public-key={tmp_path / 'k.pub'}"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAST_API_KEY", API_KEY)
        assert await asyncio.to_thread(main, [*create, "--gpu-name=RTX_4090", *common]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("p1\tready\tgpu=")
        assert "renting RTX_4090 offer 9002" in err
        assert "creating standby VM dumont-p1-standby" in err
        destroy = [store, "pair", "destroy", "--pair=p1", *common]
        assert await asyncio.to_thread(main, destroy) == 0
        assert "deleting standby dumont-p1-standby" in capsys.readouterr().err


def test_snapshot_verbs_are_wired_and_keep_their_own_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from provisioning.cli import build_parser
    from provisioning.settings import resolve

    monkeypatch.setenv("DUMONT_PROVISION_EXCLUDE", "*.ckpt")
    parser = build_parser()
    snapshot = parser.parse_args(["snapshot", "create", str(tmp_path)])
    before = dict(vars(snapshot))
    assert callable(snapshot.handler)
    after = dict(vars(resolve(snapshot)))
    # Only the root option --store is ours; snapshot's --exclude and the rest are left alone.
    assert {k: v for k, v in after.items() if k != "store"} == {
        k: v for k, v in before.items() if k != "store"
    }
    sync = resolve(parser.parse_args(["sync", "render"]))
    assert sync.exclude == ["*.ckpt"]


def test_snapshot_on_the_gpu_needs_a_destination_and_well_formed_env(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sync = ["sync", "snapshot", "--gpu", "root@h", "--standby", "root@s"]
    assert "missing --snapshot-destination" in error_line(capsys, sync)
    bad_env = [*sync, "--snapshot-destination=gs://b/p", "--gpu-env=NOEQUALS"]
    assert "bad --gpu-env 'NOEQUALS': expected NAME=VALUE" in error_line(capsys, bad_env)


def test_gpu_snapshot_agent_is_one_runnable_archive_of_the_engine(tmp_path: Path) -> None:
    archive = tmp_path / "agent.pyz"
    archive.write_bytes(agent_archive())
    names = zipfile.ZipFile(archive).namelist()
    assert "__main__.py" in names
    assert "provisioning/snapshot/restore.py" in names
    assert not [n for n in names if n.startswith("provisioning/cli")]  # no cloud clients
    assert agent_archive() == agent_archive()  # stable: its hash names the file on the GPU
    run = subprocess.run(
        [sys.executable, "-I", str(archive), "list", "--destination", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "holds no snapshot repository" in run.stderr


@pytest.mark.parametrize(
    "command",
    [["sync", verb] for verb in ("render", "deploy", "status", "fence", "reverse", "snapshot")]
    + [["pair", verb] for verb in ("create", "gpu-lost", "reconcile")]
    + [["snapshot", verb] for verb in ("create", "restore", "list", "prune")],
)
def test_every_help_renders(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A default with a literal % (ssh's %C) once made argparse crash on --help."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("cause", "reason", "planned"),
    [
        ("park", "idle for 30 min", True),  # the cause says it, whatever the words
        ("switchover", "maintenance", True),
        ("passive_failure", "park: a reason that only looks planned", False),
        ("", "switchover: an older proxy, no cause", True),  # the prefix, when no cause is set
    ],
)
def test_gpu_lost_leaves_a_planned_switch_alone_by_its_cause(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
    reason: str,
    planned: bool,
) -> None:
    """The proxy's on_failover hook runs `pair gpu-lost` after every switch; DUMONT_CAUSE tells
    a planned one (park, switchover) from a lost GPU."""
    monkeypatch.setenv("DUMONT_CAUSE", cause)
    monkeypatch.setenv("DUMONT_REASON", reason)
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    store = tmp_path / "pairs.sqlite3"
    code = main([f"--store={store}", "pair", "gpu-lost", "--pair=nobody"])
    out = capsys.readouterr()
    if planned:
        assert code == 0
        assert "planned switch" in out.out
    else:
        assert "planned switch" not in out.out
        assert code != 0  # it went on to look for the pair, which does not exist
