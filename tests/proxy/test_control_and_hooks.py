"""The control API and hooks, through the real CLI with a TOML config file."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import Proc, start_proxy

TOKEN = "s3cret-token"


def write_config(tmp: Path, **hooks: str) -> Path:
    lines = [
        'failback = "manual"',
        "[health]",
        "interval = 0.2",
        "fall = 2",
        "rise = 2",
        "[hooks]",
        "timeout = 5",
    ]
    lines += [f"{name} = {json.dumps(command)}" for name, command in hooks.items()]
    path = tmp / "dumont.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def hook_writer(tmp: Path, name: str, exit_code: int = 0) -> str:
    """A hook command that records its DUMONT_* environment into NAME.json."""
    out = tmp / f"{name}.json"
    return (
        "python3 -c 'import json,os,sys; json.dump({k: v for k, v in os.environ.items() "
        f'if k.startswith("DUMONT_")}}, open("{out}", "w")); sys.exit({exit_code})\''
    )


def start_with_hooks(tmp_path: Path, gpu: Proc, cpu: Proc, **hooks: str) -> Proc:
    """The proxy in front of ``gpu`` and ``cpu`` with these hooks and the admin token."""
    config = write_config(tmp_path, **hooks)
    return start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        "--config",
        str(config),
        env={"DUMONT_ADMIN_TOKEN": TOKEN},
    )


async def admin(
    proxy: Proc, method: str, path: str, token: str | None = TOKEN, body: object = None
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://127.0.0.1:{proxy.control_port}{path}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, headers=headers, json=body) as r,
    ):
        return r.status, await r.json()


async def both_healthy(proxy: Proc) -> None:
    """Admin commands need both machines' first checks: the proxy answers before they are in."""

    async def check() -> bool:
        _, st = await admin(proxy, "GET", "/admin/status")
        backends = st["backends"]
        assert isinstance(backends, dict)
        return all(b["healthy"] for b in backends.values())

    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, "backends never both healthy"
        await asyncio.sleep(0.05)


async def whoami(proxy: Proc) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{proxy.port}/x") as r:
        return str((await r.json())["backend"])


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_admin_failover_failback_and_hooks(
    tmp_path: Path, upstream_processes: Callable[[str], Proc]
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_with_hooks(
        tmp_path,
        gpu,
        cpu,
        on_failover=hook_writer(tmp_path, "on_failover"),
        before_failback=hook_writer(tmp_path, "before_failback"),
        on_failback=hook_writer(tmp_path, "on_failback"),
    )
    try:
        await both_healthy(proxy)
        assert await whoami(proxy) == "gpu"
        assert (await admin(proxy, "POST", "/admin/failover", token=None))[0] == 401
        assert (await admin(proxy, "POST", "/admin/failover", token="wrong"))[0] == 401
        status, body = await admin(proxy, "POST", "/admin/failover")
        assert status == 200, body
        assert body["active"] == "standby"
        assert await whoami(proxy) == "cpu"
        await wait_for((tmp_path / "on_failover.json").exists)
        env = json.loads((tmp_path / "on_failover.json").read_text())
        assert env["DUMONT_EVENT"] == "on_failover"
        assert env["DUMONT_FROM"] == "primary"
        assert env["DUMONT_TO"] == "standby"
        assert env["DUMONT_TO_URL"] == f"http://127.0.0.1:{cpu.port}/"
        assert env["DUMONT_REASON"].startswith("admin")
        # Failover again is refused with the reason, as a 409.
        status, body = await admin(proxy, "POST", "/admin/failover")
        assert status == 409
        assert "serving_primary" in str(body["detail"])

        status, body = await admin(proxy, "POST", "/admin/failback")
        assert status == 200
        await wait_for((tmp_path / "on_failback.json").exists)
        assert json.loads((tmp_path / "before_failback.json").read_text())["DUMONT_TO"] == "primary"
        assert await whoami(proxy) == "gpu"
    finally:
        proxy.stop()


@pytest.mark.slow
async def test_failing_before_failback_keeps_the_standby(
    tmp_path: Path, upstream_processes: Callable[[str], Proc]
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_with_hooks(
        tmp_path, gpu, cpu, before_failback=hook_writer(tmp_path, "bf", exit_code=3)
    )
    try:
        await both_healthy(proxy)
        assert (await admin(proxy, "POST", "/admin/failover"))[0] == 200
        status, _ = await admin(proxy, "POST", "/admin/failback")
        assert status == 200  # accepted: the hook runs, then decides
        await wait_for((tmp_path / "bf.json").exists)

        async def abandoned() -> dict[str, object]:
            while True:
                _, st = await admin(proxy, "GET", "/admin/status")
                switches = st["switches"]
                assert isinstance(switches, list)
                if switches and switches[0]["outcome"] == "abandoned":
                    return st
                await asyncio.sleep(0.05)

        st = await asyncio.wait_for(abandoned(), 10)
        assert st["active"] == "standby"
        assert "exit 3" in str(st["switches"][0]["detail"])  # type: ignore[index]
        assert await whoami(proxy) == "cpu"
    finally:
        proxy.stop()


@pytest.mark.slow
async def test_put_backend_points_a_role_at_a_new_machine(
    upstream_processes: Callable[[str], Proc],
) -> None:
    gpu, cpu, new_gpu = (upstream_processes(n) for n in ("gpu", "cpu", "new-gpu"))
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        "--health-interval",
        "0.2",
        "--rise",
        "2",
        "--failback",
        "manual",
        "--admin-token",
        TOKEN,
    )
    try:
        gpu.signal_group(signal.SIGKILL)
        for _ in range(100):
            if await whoami(proxy) == "cpu":
                break
            await asyncio.sleep(0.05)
        assert (await admin(proxy, "PUT", "/admin/backends/primary", body={"url": "ftp://x"}))[
            0
        ] == 400
        assert (await admin(proxy, "PUT", "/admin/backends/gpu", body={"url": "http://x:1"}))[
            0
        ] == 404
        status, body = await admin(
            proxy,
            "PUT",
            "/admin/backends/primary",
            body={"url": f"http://127.0.0.1:{new_gpu.port}"},
        )
        assert status == 200, body

        async def primary_healthy() -> None:
            while True:
                _, st = await admin(proxy, "GET", "/admin/status")
                if st["failback_available"]:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(primary_healthy(), 10)
        assert (await admin(proxy, "POST", "/admin/failback"))[0] == 200
        assert await whoami(proxy) == "new-gpu"
    finally:
        proxy.stop()


@pytest.mark.slow
async def test_sigterm_closes_websockets_1001_and_finishes_in_flight(
    upstream_processes: Callable[[str], Proc],
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}", f"http://127.0.0.1:{cpu.port}", "--shutdown-timeout", "5"
    )
    base = f"http://127.0.0.1:{proxy.port}"
    try:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{base}/ws")
            slow = asyncio.get_running_loop().create_task(s.get(f"{base}/slow?s=1"))
            await asyncio.sleep(0.3)
            proxy.popen.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=5)
            assert msg.data == 1001
            response = await slow
            assert response.status == 200
            assert await response.text() == "slow from gpu"
        assert await asyncio.to_thread(proxy.popen.wait, 10) == 0
    finally:
        proxy.stop()


def test_hooks_do_not_inherit_the_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.hooks import hook_environment

    monkeypatch.setenv("DUMONT_STANDBY", "http://cpu:8080")  # the proxy's meaning: a URL
    monkeypatch.setenv("PATH", "/usr/bin")
    env = hook_environment({"DUMONT_EVENT": "on_failover", "DUMONT_TO": "standby"})
    assert "DUMONT_STANDBY" not in env
    assert env["DUMONT_EVENT"] == "on_failover"
    assert env["PATH"] == "/usr/bin"


async def test_a_command_names_its_cause_as_data(
    tmp_path: Path, upstream_processes: Callable[[str], Proc]
) -> None:
    """Provisioning sends {"reason", "cause"}: the cause reaches the switch record and the hooks
    as data (DUMONT_CAUSE) whatever the reason's words; an unknown cause is one line, a 400."""
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_with_hooks(
        tmp_path,
        gpu,
        cpu,
        on_failover=hook_writer(tmp_path, "on_failover"),
        on_failback=hook_writer(tmp_path, "on_failback"),
    )
    try:
        await both_healthy(proxy)
        status, body = await admin(
            proxy, "POST", "/admin/failover", body={"reason": "idle GPU", "cause": "oops"}
        )
        assert status == 400
        assert "cause must be one of" in str(body["detail"])
        assert "'oops'" in str(body["detail"])
        status, body = await admin(
            proxy, "POST", "/admin/failover", body={"reason": "idle GPU", "cause": "park"}
        )
        assert status == 200, body
        await wait_for((tmp_path / "on_failover.json").exists)
        env = json.loads((tmp_path / "on_failover.json").read_text())
        assert env["DUMONT_CAUSE"] == "park"
        assert env["DUMONT_REASON"] == "idle GPU"
        status, body = await admin(
            proxy, "POST", "/admin/failback", body={"reason": "GPU 7 filled", "cause": "resume"}
        )
        assert status == 200, body
        await wait_for((tmp_path / "on_failback.json").exists)
        assert json.loads((tmp_path / "on_failback.json").read_text())["DUMONT_CAUSE"] == "resume"
        _, state = await admin(proxy, "GET", "/admin/status")
        switches = state["switches"]
        assert isinstance(switches, list)
        assert [s["cause"] for s in switches][:2] == ["resume", "park"]  # newest first
    finally:
        proxy.stop()
