"""``make demo``: two local demo backends named gpu and cpu, and the proxy in front of them.

Each backend runs in its own process group so you can kill the gpu one, as a spot interruption
would, and watch the switch. Ports come from DUMONT_DEMO_GPU_PORT / DUMONT_DEMO_CPU_PORT (default
18081/18082); the proxy takes every DUMONT_* setting as usual (listen defaults to 127.0.0.1:8888).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request

from .cli import main as proxy_main

__all__ = ["main"]


def _start_backend(name: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.demo_backend", name, str(port)], start_new_session=True
    )


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"demo backend on port {port} did not start")


def main() -> int:
    gpu_port = int(os.environ.get("DUMONT_DEMO_GPU_PORT", "18081"))
    cpu_port = int(os.environ.get("DUMONT_DEMO_CPU_PORT", "18082"))
    backends = {"gpu": _start_backend("gpu", gpu_port), "cpu": _start_backend("cpu", cpu_port)}
    try:
        for name, port in (("gpu", gpu_port), ("cpu", cpu_port)):
            _wait_healthy(port, backends[name])
        listen = os.environ.get("DUMONT_LISTEN", "127.0.0.1:8888")
        gpu = backends["gpu"].pid
        print(
            f"\nDumont demo: open http://{listen}/ (served by the gpu backend)\n"
            f"  kill the GPU machine:   kill -9 -{gpu}   (its process group)\n"
            f"  or freeze it:           kill -STOP -{gpu}   (then kill -CONT -{gpu})\n"
            f"  state:                  curl -s http://{listen}/__dumont/status\n"
            "  stop the demo:          Ctrl-C\n",
            flush=True,
        )
        return proxy_main(
            [
                "--primary", f"http://127.0.0.1:{gpu_port}",
                "--standby", f"http://127.0.0.1:{cpu_port}",
                "--listen", listen,
                "--health-interval", os.environ.get("DUMONT_HEALTH_INTERVAL", "0.5"),
                "--failback-hold", os.environ.get("DUMONT_FAILBACK_HOLD", "10"),
            ]
        )  # fmt: skip
    finally:
        for proc in backends.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
