"""The [limits] and [tls] settings: TOML, environment and flags, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import LimitsConfig, load_config, parse_args
from proxy.errors import ConfigError

BASE = {"DUMONT_PRIMARY": "http://gpu.test:8080", "DUMONT_STANDBY": "http://cpu.test:8080"}


def test_defaults_are_the_documented_ones() -> None:
    config = load_config(env=BASE)
    assert config.limits == LimitsConfig()
    assert (config.limits.header_timeout, config.limits.max_connections_per_ip) == (10.0, 256)
    assert config.tls.cert is None
    assert config.allow_python_parser is False


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "dumont.toml"
    toml.write_text(
        "[limits]\nheader_timeout = 4\nmax_header_count = 50\n"
        '[tls]\ncert = "/c.pem"\nkey = "/k.pem"\nhsts = 3600\n'
    )
    flags = parse_args(["--limits-max-header-count", "60"])
    config = load_config(
        flags, {**BASE, "DUMONT_CONFIG": str(toml), "DUMONT_LIMITS_HEADER_TIMEOUT": "5"}
    )
    assert config.limits.header_timeout == 5.0
    assert config.limits.max_header_count == 60
    assert (config.tls.cert, config.tls.key, config.tls.hsts) == ("/c.pem", "/k.pem", 3600.0)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DUMONT_TLS_CERT": "/c.pem"}, "tls.key"),
        ({"DUMONT_TLS_KEY": "/k.pem"}, "tls.cert"),
        ({"DUMONT_TLS_HSTS": "60"}, "tls.hsts"),
        ({"DUMONT_LIMITS_HEADER_TIMEOUT": "0"}, "limits.header_timeout"),
        ({"DUMONT_LIMITS_MAX_CONNECTIONS": "-1"}, "limits.max_connections"),
        ({"DUMONT_LIMITS_MAX_URL_LENGTH": "big"}, "limits.max_url_length"),
        ({"DUMONT_ALLOW_PYTHON_PARSER": "maybe"}, "allow_python_parser"),
    ],
)
def test_bad_values_name_their_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={**BASE, **env})
    assert caught.value.key == key
