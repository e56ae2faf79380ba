"""The shared settings layer by itself: layers, flags, one-line errors, on a small model."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.settings import (
    Schema,
    SettingError,
    boolean,
    command_parser,
    count,
    optional_text,
    positive_seconds,
    setting,
    table,
    texts,
)


@dataclass(frozen=True)
class Inner:
    interval: float = setting(1.5, help="seconds between checks", parse=positive_seconds)
    fall: int = setting(2, help="failures before down", parse=count, flag="--fall")


@dataclass(frozen=True)
class Model:
    target: str = setting(help="where to go", parse=optional_text)
    inner: Inner = table(Inner)
    mode: str = setting("auto", help="how", choices=("auto", "manual"))
    verbose: bool = setting(False, help="say more", parse=boolean, takes="switch")
    tags: tuple[str, ...] = setting((), help="labels", parse=texts, takes="many")
    secret: str | None = setting(None, help="a token", parse=optional_text, env=None)
    notes: str | None = setting(None, help="file only", parse=optional_text, flag=None)


SCHEMA: Schema[Model] = Schema(Model, env_prefix="T_", config_env="T_CONFIG")


def parse(*argv: str) -> argparse.Namespace:
    parser = command_parser("t", "a test command")
    SCHEMA.add_config_flag(parser, "TOML file")
    SCHEMA.add_flags(parser)
    return parser.parse_args(argv)


def test_names_come_from_the_key() -> None:
    names = {e.key: (e.option, e.env) for e in SCHEMA.entries}
    assert names == {
        "target": ("--target", "T_TARGET"),
        "inner.interval": ("--inner-interval", "T_INNER_INTERVAL"),
        "inner.fall": ("--fall", "T_FALL"),
        "mode": ("--mode", "T_MODE"),
        "verbose": ("--verbose", "T_VERBOSE"),
        "tags": ("--tags", "T_TAGS"),
        "secret": ("--secret", None),
        "notes": (None, None),
    }
    assert [e.key for e in SCHEMA.command_line] == [
        "target", "inner.interval", "inner.fall", "mode", "verbose", "tags", "secret",
    ]  # fmt: skip


def test_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(
        'target = "file"\nmode = "manual"\nnotes = "n"\n[inner]\ninterval = 4\nfall = 7\n'
    )
    env = {"T_CONFIG": str(toml), "T_INNER_INTERVAL": "3", "T_FALL": "5", "T_TAGS": "a, b"}
    loaded = SCHEMA.load(parse("--fall", "9", "--verbose"), env)
    assert loaded == Model(
        target="file",
        inner=Inner(interval=3.0, fall=9),
        mode="manual",
        verbose=True,
        tags=("a", "b"),
        notes="n",
    )
    assert SCHEMA.load(parse("--target", "x")) == Model(target="x")
    assert SCHEMA.load(parse("--target", "x", "--tags", "c", "--tags", "d")).tags == ("c", "d")


def test_file_keys_may_be_spelt_as_flags(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text('target = "x"\n[inner]\n"interval" = 2\n')
    assert SCHEMA.load(env={"T_CONFIG": str(toml)}).inner.interval == 2.0


@pytest.mark.parametrize(
    ("argv", "env", "toml", "key", "fragment"),
    [
        (["--fall", "0"], {}, None, "inner.fall", "must be at least 1, got '0'"),
        ([], {"T_INNER_INTERVAL": "soon"}, None, "inner.interval", "expected a number"),
        (["--mode", "often"], {}, None, "mode", "expected one of auto, manual"),
        ([], {"T_VERBOSE": "maybe"}, None, "verbose", "expected true or false"),
        ([], {}, "colour = 1\n", "colour", "unknown setting"),
        ([], {}, "[inner]\nintervall = 1\n", "inner.intervall", "unknown setting"),
        ([], {}, "target = [\n", "config", "cannot read"),
    ],
)
def test_errors_are_one_line_naming_the_key(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml: str | None, key: str, fragment: str
) -> None:
    if toml is not None:
        (tmp_path / "t.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp_path / "t.toml")]
    with pytest.raises(SettingError) as caught:
        SCHEMA.load(parse("--target", "x", *argv), env)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_required_setting_says_how_to_give_it() -> None:
    with pytest.raises(SettingError, match="target: missing: give --target or T_TARGET"):
        SCHEMA.load(parse())


def test_the_command_chooses_its_error_class() -> None:
    class CommandError(Exception):
        pass

    def error(key: str, problem: str) -> CommandError:
        return CommandError(f"{key} is wrong: {problem}")

    schema = Schema(Model, env_prefix="T_", error=error)
    with pytest.raises(CommandError, match=r"inner\.fall is wrong: must be at least 1"):
        schema.load(env={"T_TARGET": "x", "T_FALL": "0"})


def test_help_shows_the_models_default_and_the_variable() -> None:
    lines = {e.key: SCHEMA.help_line(e) for e in SCHEMA.entries if e.option}
    assert lines["inner.interval"] == "seconds between checks [1.5] (env T_INNER_INTERVAL)"
    assert lines["mode"] == "how [auto] (env T_MODE)"
    assert lines["target"] == "where to go (env T_TARGET)"
    assert lines["verbose"] == "say more (env T_VERBOSE)"  # a switch is off unless given
    assert lines["secret"] == "a token"


def test_a_subcommand_reads_only_the_settings_it_declared(tmp_path: Path) -> None:
    root = command_parser("t", "a test command")
    sub = root.add_subparsers(dest="verb", required=True)
    SCHEMA.add_flags(sub.add_parser("go"), ("target", "mode"))
    SCHEMA.add_flags(sub.add_parser("wait"), ("inner.interval",))
    env = {"T_TARGET": "x", "T_MODE": "manual", "T_INNER_INTERVAL": "bad"}
    values = SCHEMA.values(root.parse_args(["go"]), env, only_taken=True)
    assert values == {"target": "x", "mode": "manual"}  # T_INNER_INTERVAL is wait's, not go's
    with pytest.raises(SettingError, match=r"inner\.interval"):
        SCHEMA.values(root.parse_args(["wait"]), env, only_taken=True)
