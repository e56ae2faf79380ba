"""What the shared layer gives each command that it lacked: [pages] from flags and environment,
one-line errors naming the key in dumont-provision, status reading the proxy's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.cli import main as provision_main
from proxy.config import load_config, parse_args
from proxy.dashboard.status_cli import status_main
from proxy.errors import ConfigError

BASE = ["--primary", "http://gpu:8080", "--standby", "http://cpu:8080"]


def test_pages_settings_come_from_flags_and_the_environment_too(tmp_path: Path) -> None:
    assert load_config(parse_args(BASE)).pages.watcher is True
    assert load_config(parse_args([*BASE, "--pages-watcher", "false"])).pages.watcher is False
    env = {"DUMONT_PAGES_TIPS_ENABLED": "no"}
    assert load_config(parse_args(BASE), env).pages.tips_enabled is False
    toml = tmp_path / "d.toml"
    toml.write_text('[pages]\nwatcher = false\n[[pages.tips]]\nid = "a"\ntitle = "T"\n'
                    'text = "X"\nlink = "https://example.com/"\n')  # fmt: skip
    config = load_config(parse_args([*BASE, "--config", str(toml)]))
    assert config.pages.watcher is False
    assert [tip.id for tip in config.pages.tips] == ["a"]
    assert load_config(
        parse_args([*BASE, "--config", str(toml), "--pages-watcher", "on"])
    ).pages.watcher


def test_a_string_where_the_file_wants_a_boolean_names_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "d.toml"
    toml.write_text('[pages]\nwatcher = "yes"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(parse_args([*BASE, "--config", str(toml)]))
    assert caught.value.key == "pages.watcher"


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert provision_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_provision_errors_name_the_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    render = ["sync", "render", "--gpu", "root@h", "--standby", "root@s"]
    monkeypatch.setenv("DUMONT_PROVISION_DELAY", "soon")
    line = _error_line(capsys, render)
    assert line.startswith("dumont-provision: error: delay: expected a number")
    monkeypatch.delenv("DUMONT_PROVISION_DELAY")
    line = _error_line(capsys, [*render, "--delete", "always"])
    assert "delete: expected one of true, false, running, startup, got 'always'" in line
    toml = tmp_path / "p.toml"
    toml.write_text('[provisioning]\ncolour = "blue"\n')
    line = _error_line(capsys, ["--config", str(toml), *render])
    assert "colour: unknown setting in [provisioning]" in line


def test_provision_reads_only_the_verbs_own_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # park's --park-after is not render's: a bad value there must not stop `sync render`.
    monkeypatch.setenv("DUMONT_PROVISION_PARK_AFTER", "later")
    assert provision_main(["sync", "render", "--gpu", "root@h", "--standby", "root@s"]) == 0
    assert "delay = 1," in capsys.readouterr().out


def test_status_reads_the_proxys_variables(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    env = {"DUMONT_CONTROL_LISTEN": "127.0.0.1:9", "DUMONT_ADMIN_TOKEN": "t"}
    assert status_main([], env) == 2
    assert "cannot ask http://127.0.0.1:9" in capsys.readouterr().err
    assert status_main(["--timeout", "never"], env) == 2
    assert "timeout: expected a number" in capsys.readouterr().err
