"""The Dockerfile, built and run where no Docker engine runs (issue 8).

The base image is Debian 12 made here by debootstrap (scripts/make-base-image.sh, cached in
/var/cache/dumont); buildah builds the Dockerfile on it with chroot isolation and runs the image's
entrypoint. A chroot shares the host's network namespace, so the proxy in the container listens on
loopback and reaches two backend processes of this test; killing one shows the failover.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.buildah import (
    REPO,
    Container,
    build_image,
    inspect_image,
    run,
    uid_of,
)
from tests.support.ports import free_port
from tests.support.processes import Proc, kill_group

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(900)]

if os.geteuid() != 0:  # pragma: no cover - CI and the developers' machines run as root
    pytest.skip("buildah's chroot builds and debootstrap need root", allow_module_level=True)


@pytest.fixture(scope="module")
def proxy_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = f"localhost/dumont-proxy-test:{uuid.uuid4().hex[:10]}"
    log = tmp_path_factory.mktemp("build") / "buildah-bud.log"
    try:
        build_image(tag, base_image, log)
        yield tag
    finally:
        run(["buildah", "rmi", "--force", tag], check=False)


@pytest.fixture
def container(proxy_image: str) -> Iterator[Container]:
    ctr = Container.create(proxy_image)
    try:
        yield ctr
    finally:
        ctr.remove()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def wait_for(what: str, check: Any, timeout: float, proxy: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proxy.poll() is None, f"the containerised proxy exited {proxy.returncode}"
        try:
            result = check()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def test_image_is_slim_unprivileged_and_labelled(proxy_image: str, container: Container) -> None:
    config = inspect_image(proxy_image)["Docker"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/dumont/bin/dumont-proxy"]
    assert "8888/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/__dumont/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert "DUMONT_ASSETS_DIR=/usr/share/dumont" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "dumont-proxy"
    assert labels["org.opencontainers.image.version"] == "test"
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/dumont-base:")

    probe = container.run(
        [
            "sh",
            "-c",
            "id -u; for c in cc gcc c++ g++ clang; do "
            "command -v $c && exit 1; done; ls /src 2>/dev/null && exit 2; "
            "cd /usr/share/dumont && find templates static -type f | sort",
        ]
    )
    uid, *assets = probe.stdout.split()
    assert uid == "10001"
    expected = sorted(
        str(p.relative_to(REPO))
        for d in ("templates", "static")
        for p in (REPO / d).rglob("*")
        if p.is_file()
    )
    assert assets == expected
    # The provisioning CLI's cloud SDK is not the proxy's business (Dockerfile, SKIP_DEPS).
    assert container.run(["python3", "-c", "import google.cloud.compute"], check=False).returncode
    # The data plane the build stage compiled, and current with the sources installed beside it.
    which = "import proxy.dataplane, proxy.compiled as c; print(c.BUILDS['proxy.dataplane'].reason)"
    build = container.run(["/opt/dumont/bin/python", "-I", "-c", which])
    assert build.stdout.strip() == "compiled with mypyc"


def test_entrypoint_serves_and_fails_over(
    proxy_image: str, container: Container, backends: tuple[Proc, Proc], tmp_path: Path
) -> None:
    gpu, cpu = backends
    port, control_port = free_port(), free_port()
    # Backends and health settings from a mounted TOML file, listeners from the environment: both
    # ways of configuring the container at once.
    toml = tmp_path / "dumont.toml"
    toml.write_text(
        f'primary = "http://127.0.0.1:{gpu.port}"\nstandby = "http://127.0.0.1:{cpu.port}"\n'
        'failback = "manual"\n[health]\ninterval = 0.2\nfall = 2\nrise = 2\n'
    )
    toml.chmod(0o644)
    env = {
        "DUMONT_CONFIG": "/etc/dumont/dumont.toml",
        "DUMONT_LISTEN": f"127.0.0.1:{port}",
        "DUMONT_CONTROL_LISTEN": f"127.0.0.1:{control_port}",
    }
    config = inspect_image(proxy_image)["Docker"]["config"]
    command = [*config["Entrypoint"], *(config.get("Cmd") or [])]
    argv = container.run_argv(command, env, volumes=[f"{toml}:/etc/dumont/dumont.toml:ro"])
    log = (tmp_path / "proxy.log").open("wb")
    proxy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "the proxy's health check answers",
            lambda: get_json(f"{base}/__dumont/healthz")["status"] == "ok",
            60,
            proxy,
        )
        wait_for("the primary serves", lambda: get_json(f"{base}/")["backend"] == "gpu", 20, proxy)
        assert get_json(f"{base}/__dumont/status")["active"] == "primary"
        # The pages' assets come from the image (DUMONT_ASSETS_DIR), not from a source tree.
        watcher = REPO / "static" / "watcher.js"
        if watcher.is_file():
            with urllib.request.urlopen(f"{base}/__dumont/static/watcher.js", timeout=2) as r:
                assert r.read() == watcher.read_bytes()

        # It runs unprivileged, and the image's own HEALTHCHECK command passes against it.
        pids = container.entrypoints()
        assert len(pids) == 1, pids
        assert uid_of(pids[0]) == 10001
        healthcheck = config["Healthcheck"]["Test"][1:]
        assert container.run(healthcheck, env, timeout=20).returncode == 0

        gpu.signal_group(signal.SIGKILL)  # a loud death: connections refused
        wait_for(
            "failover to the standby",
            lambda: get_json(f"{base}/__dumont/status")["active"] == "standby",
            20,
            proxy,
        )
        assert get_json(f"{base}/")["backend"] == "cpu"

        # `docker stop`: SIGTERM to the container's process; the proxy shuts down gracefully and
        # `buildah run` passes on its exit status.
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        assert proxy.wait(timeout=30) == 0, (tmp_path / "proxy.log").read_text()[-3000:]
        # And the HEALTHCHECK is not vacuous: with the proxy gone it fails.
        assert container.run(healthcheck, env, timeout=20, check=False).returncode != 0
    finally:
        kill_group(proxy)
        log.close()
        if os.environ.get("DUMONT_TEST_VERBOSE"):
            print((tmp_path / "proxy.log").read_text())


def test_buildah_is_installed() -> None:
    # Guards the module: without these tools the tests above fail with a less helpful message.
    for tool in ("buildah", "podman", "debootstrap"):
        assert shutil.which(tool), f"{tool} missing: run scripts/install-debian-deps.sh"
