"""Configuration layering and one-line errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import SETTINGS, load_config, parse_args
from proxy.errors import ConfigError

BASE = ["--primary", "http://gpu:8080", "--standby", "http://cpu:8080"]


def load(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_config(parse_args(argv), env or {})


def test_defaults_fit_a_wan() -> None:
    c = load(BASE)
    assert (c.health.interval, c.health.timeout, c.health.fall, c.health.rise) == (1, 1, 2, 3)
    assert str(c.listen) == "0.0.0.0:8888"
    assert str(c.control_listen) == "127.0.0.1:8889"
    assert c.failback == "auto"
    assert c.failback_hold == 30


def test_flags_override_env_override_file(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(
        'primary = "http://file-gpu:1"\nstandby = "http://file-cpu:1"\nfailback = "manual"\n'
        '[health]\ninterval = 5\nfall = 4\n[hooks]\non_failover = "echo hi"\n'
    )
    env = {"DUMONT_HEALTH_INTERVAL": "3", "DUMONT_STANDBY": "http://env-cpu:2"}
    c = load(["--config", str(f), "--health-interval", "0.5"], env)
    assert c.health.interval == 0.5  # flag beats env and file
    assert c.health.timeout == 0.5  # follows the interval unless set
    assert c.health.fall == 4  # file
    assert str(c.standby) == "http://env-cpu:2/"  # env beats file
    assert str(c.primary) == "http://file-gpu:1/"
    assert c.failback == "manual"
    assert c.hooks.on_failover == "echo hi"


def test_config_path_from_env(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text('primary = "http://a:1"\nstandby = "http://b:1"\n')
    assert load([], {"DUMONT_CONFIG": str(f)}).primary.host == "a"


@pytest.mark.parametrize(
    ("argv", "env", "toml", "key", "fragment"),
    [
        (["--health-interval", "-1"], {}, None, "health.interval", "must be > 0"),
        (["--health-interval", "soon"], {}, None, "health.interval", "number"),
        (["--fall", "0"], {}, None, "health.fall", "at least 1"),
        (["--rise", "1.5"], {}, None, "health.rise", "whole number"),
        (["--failback", "sometimes"], {}, None, "failback", "auto, manual"),
        (["--listen", "nowhere"], {}, None, "listen", "HOST:PORT"),
        (["--listen", "1.2.3.4:99999"], {}, None, "listen", "0-65535"),
        ([], {"DUMONT_PRIMARY": "gpu:8080"}, None, "primary", "http://HOST:PORT"),
        ([], {"DUMONT_STANDBY": "http://gpu:8080/"}, None, "standby", "must differ"),
        (["--control-listen", "0.0.0.0:8889"], {}, None, "admin_token", "required"),
        (["--trusted-proxies", "10.0.0.0/8,banana"], {}, None, "trusted_proxies", "banana"),
        (["--health-warmup-path", "login"], {}, None, "health.warmup_path", "start with '/'"),
        ([], {}, "colour = 'blue'\n", "colour", "unknown setting"),
        ([], {}, "[health]\nintervall = 1\n", "health.intervall", "unknown setting"),
        ([], {}, "primary = [\n", "config", "cannot read"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml: str | None, key: str, fragment: str
) -> None:
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp_path / "c.toml")]
    base = list(BASE)
    for name in ("primary", "standby"):
        if f"DUMONT_{name.upper()}" in env:  # flags beat env: leave the flag out
            i = base.index(f"--{name}")
            del base[i : i + 2]
    with pytest.raises(ConfigError) as caught:
        load(base + argv, env)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_warm_up_path_defaults_to_root_and_empty_turns_it_off() -> None:
    assert load(list(BASE)).health.warmup_path == "/"
    assert load([*BASE, "--health-warmup-path", ""]).health.warmup_path is None
    assert load(list(BASE), {"DUMONT_HEALTH_WARMUP_PATH": "/x"}).health.warmup_path == "/x"


def test_missing_primary_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError, match="--primary or DUMONT_PRIMARY"):
        load(["--standby", "http://cpu:1"])


def test_cli_prints_one_line_and_exits_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "proxy", *BASE, "--fall", "-3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "dumont-proxy: config error: health.fall: must be at least 1, got '-3'"
    ]


def test_help_documents_every_setting() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0
    for setting in SETTINGS:  # every one of them has a flag and a variable
        assert setting.option is not None
        assert setting.env is not None
        assert setting.option in run.stdout
        assert setting.env in run.stdout.replace("\n", " ").replace("  ", "")
