"""`make demo` runs proxy.demo: two named backends and the proxy; killing gpu moves you to cpu."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.ports import free_port
from tests.support.processes import REPO, kill_group


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: bytes = r.read()
        return data.decode()


@pytest.mark.slow
def test_demo_switches_when_the_gpu_backend_is_killed() -> None:
    port = free_port()
    env = {
        **os.environ,
        "DUMONT_DEMO_GPU_PORT": str(free_port()),
        "DUMONT_DEMO_CPU_PORT": str(free_port()),
        "DUMONT_LISTEN": f"127.0.0.1:{port}",
        "DUMONT_CONTROL_LISTEN": f"127.0.0.1:{free_port()}",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "proxy.demo"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        banner = ""
        while "kill -9 -" not in banner:
            line = demo.stdout.readline()
            assert line, f"demo exited: {banner}"
            banner += line
        gpu_group = int(re.search(r"kill -9 -(\d+)", banner).group(1))  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        page = ""
        while time.monotonic() < deadline and "GPU machine" not in page:
            with contextlib.suppress(OSError):
                page = fetch(f"http://127.0.0.1:{port}/")
            time.sleep(0.1)
        assert "GPU machine" in page
        os.killpg(gpu_group, signal.SIGKILL)
        assert "CPU backup" in fetch(f"http://127.0.0.1:{port}/")
        os.killpg(demo.pid, signal.SIGTERM)
        assert demo.wait(timeout=15) == 0
    finally:
        kill_group(demo)
        if demo.stdout:
            demo.stdout.close()
