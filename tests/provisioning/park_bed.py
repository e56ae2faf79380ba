"""A pair ready to park: both fake clouds, one sshd standing in for every machine, real lsyncd
syncing the GPU's directories to the standby's, and the real proxy (``python -m proxy``) with the
documented hooks, in front of small health-only servers standing in for the code-servers (or
real code-servers the caller started: ``backends``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioning.cli import main
from provisioning.sync import SyncController
from tests.provisioning.conftest import FakeClouds, SyncBed, pair_service
from tests.provisioning.fake_vast import API_KEY
from tests.provisioning.test_prov_pairing import SPEC
from tests.support.ports import free_port
from tests.support.processes import kill_group_async, signal_group
from tests.support.proxies import start_healthz_only
from tests.support.sshd import children_of
from tests.support.sync_bed import start_provision_cli
from tests.support.waiting import until

# `until` is imported from here by the park tests.
__all__ = ["PAIR", "TOKEN", "ParkBed", "kill_pair_cli", "park_bed", "until"]

TOKEN = "park-test-token"
PAIR = "pam"


@dataclass
class ParkBed:
    clouds: FakeClouds
    bed: SyncBed
    store: Path
    snapshots: Path
    control: str
    client: httpx.AsyncClient
    new_gpu_port: int  # a second "code-server" for the GPU a resume rents
    proxy_log: Path
    public: str = ""  # the proxy's address for browsers

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def cli_flags(self) -> list[str]:
        """What `pair park|resume|...` needs: clouds, SSH layout, snapshots, the proxy."""
        return [
            f"--vast-url={self.clouds.vast_url}", f"--gcp-endpoint={self.clouds.gcp_url}",
            "--gcp-anonymous", "--gcp-project=proj", "--gcp-zone=us-central1-a",
            "--poll-interval=0.01", f"--standby-ssh-port={self.bed.sshd.port}", "--delay=0.2",
            *[f for f in self.bed.cli_flags() if not f.startswith(("--gpu=", "--standby="))],
            f"--snapshot-destination={self.snapshots}", f"--gpu-python={sys.executable}",
            f"--proxy-control={self.control}", f"--admin-token={TOKEN}", "--timeout=180",
        ]  # fmt: skip

    async def pair_cli(self, verb: str, *extra: str, proxy: bool = True) -> int:
        flags = self.cli_flags()
        if not proxy:
            flags = [f for f in flags if not f.startswith(("--proxy-control", "--admin-token"))]
        argv = [f"--store={self.store}", "pair", verb, PAIR, *flags, *extra]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VAST_API_KEY", API_KEY)
            return await asyncio.to_thread(main, argv)

    async def status(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.control}/admin/status", headers=self.headers)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def park_state(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.control}/admin/park", headers=self.headers)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def metrics(self) -> str:
        return (await self.client.get(f"{self.control}/metrics")).text

    async def serving(self, role: str) -> bool:
        status = await self.status()
        return bool(status["active"] == role and status["state"] == f"serving_{role}")


def proxy_hooks(bed: SyncBed, tmp_path: Path) -> str:
    """The proxy's [hooks], the documented lines, with every option in provision.toml."""
    provision = tmp_path / "provision.toml"
    bed.write_provision_config(provision)
    command = f"{shlex.quote(sys.executable)} -m provisioning.cli --config {provision}"
    return (
        "[hooks]\n"
        f"before_failover = {command + ' sync fence'!r}\n"
        f"before_failback = {command + ' sync reverse'!r}\n"
        f"switchover = {command + ' sync flush'!r}\n"
        # After a planned switch gpu-lost must see the reason and leave the pair alone.
        f"on_failover = {command + ' pair gpu-lost --pair=' + PAIR!r}\n"
        "timeout = 600\n"
    ).replace("'", '"')


@contextlib.asynccontextmanager
async def park_bed(
    clouds: FakeClouds,
    bed: SyncBed,
    tmp_path: Path,
    *,
    resume_hook: bool = False,
    backends: tuple[str, str] | None = None,
    proxy_flags: Sequence[str] = (),
    sync_delay: float = 0.2,
) -> AsyncIterator[ParkBed]:
    """``resume_hook``: the proxy's hooks.resume runs ``pair resume`` (its stderr, with the
    progress lines, goes to ``tmp_path / "resume.err"``). ``backends``: the GPU's and the
    standby's code-server URLs, instead of health-only servers; ``proxy_flags``: more options
    for the proxy (health timeouts for real code-servers on a loaded machine); ``sync_delay``:
    lsyncd's delay until the first park (long: a save is certainly still pending)."""
    clouds.vast.ssh_port = bed.sshd.port  # every rented GPU is the test's sshd
    store = tmp_path / "pairs.sqlite3"
    async with pair_service(clouds, store) as service:
        await service.create(PAIR, replace(SPEC, standby_user="root"))
    await SyncController(bed.topology(delay=sync_delay)).deploy(first_sync_timeout=120)

    # The GPU's code-server, the standby's, and the resumed GPU's.
    servers = await start_healthz_only(3)
    resumed_port = servers[2].port
    assert resumed_port is not None
    clouds.vast.code_server_port = resumed_port
    control, listen = free_port(), free_port()
    log_path = tmp_path / "proxy.log"
    async with httpx.AsyncClient(timeout=200) as client:
        result = ParkBed(
            clouds,
            bed,
            store,
            tmp_path / "snapshots",
            f"http://127.0.0.1:{control}",
            client,
            resumed_port,
            log_path,
            f"http://127.0.0.1:{listen}",
        )
        hooks = proxy_hooks(bed, tmp_path)
        if resume_hook:
            argv = [sys.executable, "-m", "provisioning.cli", f"--store={store}", "pair"]
            argv += ["resume", PAIR, *result.cli_flags()]
            line = f"{shlex.join(argv)} 2>>{shlex.quote(str(tmp_path / 'resume.err'))}"
            hooks += f"resume = {json.dumps(line)}\n"
        config = tmp_path / "dumont.toml"
        config.write_text(hooks)
        primary, standby = backends or tuple(f"http://127.0.0.1:{s.port}" for s in servers[:2])
        with log_path.open("w") as proxy_log:
            proxy = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy", f"--primary={primary}", f"--standby={standby}",
                f"--listen=127.0.0.1:{listen}", f"--control-listen=127.0.0.1:{control}",
                f"--admin-token={TOKEN}", "--failback=manual", f"--config={config}",
                "--health-interval=0.3", *proxy_flags,
                env=os.environ | {"VAST_API_KEY": API_KEY},  # for the resume hook
                start_new_session=True, stdout=asyncio.subprocess.DEVNULL, stderr=proxy_log,
            )  # fmt: skip
        try:

            async def proxy_ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    status = await result.status()
                    standby = status["backends"]["standby"]["healthy"]
                    return bool(status["state"] == "serving_primary" and standby)
                return False

            await until(proxy_ready, "the proxy serving the GPU with a healthy standby", 60)
            yield result
        finally:
            # The proxy runs each hook (a resume that a failed test left running, say) as the
            # leader of a session of its own: find them before the proxy goes, kill their groups.
            hooks_running = children_of(proxy.pid)
            await kill_group_async(proxy)
            for hook in hooks_running:
                signal_group(hook, signal.SIGKILL)
            for server in servers:
                await server.close()


async def kill_pair_cli(pb: ParkBed, verb: str, kill_when: Callable[[], Any]) -> None:
    """``dumont-provision pair VERB`` as a real process, SIGKILLed (its whole group) as soon as
    ``kill_when()`` is true; the test fails if it finished first."""
    argv = [f"--store={pb.store}", "pair", verb, PAIR, *pb.cli_flags()]
    process = await start_provision_cli(*argv, env={"VAST_API_KEY": API_KEY})
    try:

        async def due() -> bool:
            assert process.returncode is None, f"{verb} finished before the kill"
            result = kill_when()
            return bool(await result if asyncio.iscoroutine(result) else result)

        await until(due, f"the step to kill {verb} at", 120)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    finally:
        await kill_group_async(process)


@contextlib.asynccontextmanager
async def pair_process(pb: ParkBed, verb: str, log: Path, *flags: str) -> AsyncIterator[None]:
    """``pair VERB`` as its own process (group), stderr to ``log``, killed by pgid when the block
    ends: for the verbs that run until then (autopark with a schedule, watch-standby)."""
    argv = [f"--store={pb.store}", "pair", verb, PAIR, *pb.cli_flags(), *flags]
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "provisioning.cli", *argv,
            env=os.environ | {"VAST_API_KEY": API_KEY}, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        yield
    finally:
        await kill_group_async(process)
