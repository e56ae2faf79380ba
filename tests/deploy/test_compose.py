"""deploy/compose.yaml: valid against the Compose Specification, and wired as docs/DEPLOY.md says.

No Docker engine runs here; `docker compose config` (client only) is used where the compose plugin
is installed, and the Compose Specification's JSON schema (vendored in check-jsonschema) always.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML  # check-jsonschema's YAML parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"


def load() -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return document


def test_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        ).returncode
    ):
        pytest.skip("no docker compose client here; the schema check above stands in for it")
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_backends_share_nothing_but_the_proxy() -> None:
    services = load()["services"]
    proxy, gpu, cpu = services["proxy"], services["gpu"], services["cpu"]
    assert proxy["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (REPO / "deploy" / proxy["build"]["context"] / "Dockerfile").is_file()
    assert proxy["environment"]["DUMONT_PRIMARY"] == "http://gpu:8080"
    assert proxy["environment"]["DUMONT_STANDBY"] == "http://cpu:8080"
    assert set(gpu["networks"]) & set(cpu["networks"]) == set()
    assert set(gpu["networks"]) | set(cpu["networks"]) <= set(proxy["networks"])
    volumes = [{v.split(":")[0] for v in s.get("volumes", [])} for s in (gpu, cpu)]
    assert all(volumes)
    assert not volumes[0] & volumes[1]
    assert "ports" not in gpu  # reachable through the proxy only
    assert "ports" not in cpu
    # The same password on both, so that each accepts the other's session cookie (docs/DEPLOY.md).
    assert gpu["environment"]["PASSWORD"] == cpu["environment"]["PASSWORD"]


def test_proxy_environment_names_real_settings() -> None:
    # A misspelt DUMONT_* variable would be ignored silently: every one must be a proxy setting.
    from proxy.config import SETTINGS

    known = {s.env for s in SETTINGS} | {"DUMONT_CONFIG"}
    assert set(load()["services"]["proxy"]["environment"]) <= known
