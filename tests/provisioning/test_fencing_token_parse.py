"""Reading a fencing token (issue 16) from --fencing-token or the hook's DUMONT_FENCING_TOKEN: a
positive integer, else one line and exit 2 before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.errors import UsageError
from provisioning.fencing_token import (
    ENV_VAR,
    MAX_TOKEN,
    fencing_token_from,
    parse_fencing_token,
    token_guard,
)


@pytest.mark.parametrize(
    ("raw", "token"), [("1", 1), ("7", 7), ("007", 7), (str(MAX_TOKEN), MAX_TOKEN)]
)
def test_a_positive_integer_is_a_token(raw: str, token: int) -> None:
    assert parse_fencing_token(raw, what="--fencing-token") == token


@pytest.mark.parametrize(
    "raw",
    # int() accepts the whitespace, the sign, the underscore and the Arabic-Indic seven.
    ["", "0", "-1", "+7", " 7", "7\n", "1.5", "1e3", "7_0", "\u0667", "seven", str(MAX_TOKEN + 1)],
)
def test_anything_else_is_one_usage_line_naming_the_source(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_fencing_token(raw, what=ENV_VAR)
    message = str(caught.value)
    assert message.startswith(f"bad {ENV_VAR} {raw!r}: expected a positive integer")
    assert "\n" not in message


def test_the_flag_wins_over_the_environment_and_absence_means_no_check() -> None:
    assert fencing_token_from("9", {ENV_VAR: "4"}) == 9
    assert fencing_token_from(None, {ENV_VAR: "4"}) == 4
    assert fencing_token_from(None, {"DUMONT_PROVISION_FENCING_TOKEN": "4"}) is None
    assert fencing_token_from(None, {}) is None


def test_an_empty_variable_is_malformed_not_absent() -> None:
    # A leader that meant to pass a token and passed nothing must not skip the check.
    with pytest.raises(UsageError, match=f"bad {ENV_VAR} ''"):
        fencing_token_from(None, {ENV_VAR: ""})


def test_the_guard_never_sends_a_token_the_remote_shell_cannot_compare() -> None:
    with pytest.raises(UsageError):
        token_guard("/var/lib/dumont", MAX_TOKEN + 1, ":")
    assert "[ 42 -ge" in token_guard("/var/lib/dumont", 42, ":")


SYNC_FLAGS = ["--gpu=root@127.0.0.1:9", "--standby=root@127.0.0.1:9"]


@pytest.mark.parametrize("verb", ["fence", "flush", "unfence", "reverse"])
def test_the_cli_stops_at_a_malformed_flag_with_one_line_and_exit_2(
    verb: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    # Port 9 answers nothing: reaching for the standby would fail differently, and slowly.
    assert main(["sync", verb, "--fencing-token=-3", *SYNC_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err == (
        "dumont-provision: error: bad --fencing-token '-3': expected a positive integer"
        " (the etcd revision of the decision)\n"
    )


def test_the_cli_stops_at_a_malformed_variable_with_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "rev-12")
    assert main(["sync", "fence", *SYNC_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dumont-provision: error: bad {ENV_VAR} 'rev-12'")
    assert err.count("\n") == 1


def test_a_token_in_the_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A token belongs to one decision; one fixed in a file would outlive it.
    config = tmp_path / "provision.toml"
    config.write_text("[provisioning]\nfencing-token = 5\n")
    assert main([f"--config={config}", "sync", "fence", *SYNC_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dumont-provision: error: fencing-token: unknown setting")
    assert err.count("\n") == 1
