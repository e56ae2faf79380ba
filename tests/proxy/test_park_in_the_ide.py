"""The parked GPU in the IDE, through the real proxy: what provisioning reports on the control API
reaches the watcher's event stream, and the IDE's buttons reach the same actions as the dashboard's
(issue 18)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from proxy.config import HooksConfig
from tests.support.proxies import ProxyFactory, Upstreams, control_url, public_url, url_of


async def _first_event(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url) as response:
        while not (line := await response.content.readline()).startswith(b"data:"):
            pass
    event: dict[str, object] = json.loads(line[5:])
    return event


async def test_park_reports_reach_the_ide_and_its_buttons_the_proxy(
    upstreams: Upstreams, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    gpu, cpu = upstreams
    ran = tmp_path / "resume-ran"
    server = await make_proxy(
        url_of(gpu), url_of(cpu), hooks=HooksConfig(resume=f"touch {ran}", timeout=10)
    )
    public, control = public_url(server), control_url(server)
    events = str(public / "__dumont/events")
    origin = {"Origin": str(public).rstrip("/")}
    async with aiohttp.ClientSession() as session:
        assert (await _first_event(session, events))["park"] is None
        idle = {"phase": "idle", "idle_s": 1680, "park_in_s": 120, "park_after_s": 1800}
        async with session.put(control / "admin/park", json=idle) as response:
            assert response.status == 200
        park = (await _first_event(session, events))["park"]
        assert park == {
            "phase": "idle",
            "detail": "",
            "idle_min": 28,
            "park_in_min": 2,
            "standby": "present",
            "step": None,
            "resume_s": None,
        }
        async with session.post(public / "__dumont/park/keep", headers=origin) as response:
            assert response.status == 200
        assert (await _first_event(session, events))["park"] is None  # kept: active again
        async with session.post(public / "__dumont/resume", headers=origin) as response:
            assert response.status == 409  # nothing parked
        async with session.put(control / "admin/park", json={"phase": "parked"}) as response:
            assert response.status == 200
        async with session.post(public / "__dumont/resume", headers=origin) as response:
            assert response.status == 202
        park = (await _first_event(session, events))["park"]
        assert isinstance(park, dict)
        assert park["phase"] == "resuming"
        for _ in range(100):
            if ran.exists():
                break
            await asyncio.sleep(0.05)
        assert ran.exists(), "the resume hook did not run"
        async with session.post(public / "__dumont/resume") as response:
            assert response.status == 403  # not from a page of this host
