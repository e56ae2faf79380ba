"""Issue 18 as the user sees it: real code-servers behind the real proxy, Debian's Chromium on the
workbench, real sshd, rsync and lsyncd moving the files; only the clouds are fakes.

The GPU idles (a fake nvidia-smi over real SSH), ``pair autopark`` announces the park and the
user's "Keep it" postpones it. A park with a file saved 100 ms before: the file is on the standby,
the GPU instance is gone, the proxy serves the standby and the watcher, on the standby's
workbench, says the GPU is parked. The user edits a file there and clicks "Bring the GPU back":
a new GPU is rented and filled, the proxy fails back, the IDE shows each step and then the time it
took, and the edit is on the new GPU.

Each code-server runs in a mount namespace of its own where its machine's workspace is mounted at
one path (``view``), as on two real machines: the IDE's URL names the folder, and it must open on
whichever machine the proxy picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from provisioning.store import PairState, PairStore
from tests.provisioning.conftest import FakeClouds, SyncBed
from tests.provisioning.park_bed import PAIR, ParkBed, pair_process, park_bed, until
from tests.provisioning.test_gpu_idle import fake_nvidia_smi
from tests.support.browser import chromium, open_workbench
from tests.support.codeserver import (
    QUIET_SETTINGS,
    CodeServer,
    find_launcher,
    start_code_server_async,
)
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.codeserver, pytest.mark.e2e]

PASSWORD = "park-in-chromium"  # the same on every machine: session cookies stay valid
EDIT = "EPOCHS = 5  # edited in the IDE while parked"

# The launcher start_code_server() runs (DUMONT_CODE_SERVER_HOME points here): the real one, in a
# private mount namespace where the workspace it is given (the last argument) is bind-mounted at
# the shared view path. ``unshare`` and ``sh`` exec, so code-server keeps the pid, and the process
# group, that the caller kills. PARK_BED_BIND, when set, replaces the ephemeral port: the new GPU's
# port must be known before it is rented.
LAUNCHER = r"""#!/bin/bash
set -euo pipefail
disk="${@: -1}"
args=("${@:1:$#-1}")
if [ -n "${PARK_BED_BIND:-}" ]; then
  args=("${args[@]/#--bind-addr=127.0.0.1:0/--bind-addr=127.0.0.1:$PARK_BED_BIND}")
fi
exec unshare --mount --propagation private /bin/sh -c \
  'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$disk" @VIEW@ @REAL@ "${args[@]}" @VIEW@
"""

# Reports every text the park notice shows, in every document the page loads.
WATCH_PARK = """
(() => {
  let last = null;
  setInterval(() => {
    const p = document.querySelector('.dumont-watcher-notice.dumont-park p');
    const text = p ? p.textContent : null;
    if (text !== last) {
      last = text;
      if (text) window.dumontParkText(text);
    }
  }, 50);
})();
"""


@contextlib.asynccontextmanager
async def code_servers(
    bases: dict[str, tuple[Path, Path]],
) -> AsyncIterator[dict[str, CodeServer]]:
    """Start one code-server per (base dir, workspace) at once; kill every one that started."""
    started: dict[str, CodeServer] = {}

    async def start(name: str, base: Path, workspace: Path) -> None:
        started[name] = await start_code_server_async(
            base, PASSWORD, workspace=workspace, timeout=120
        )

    try:
        async with asyncio.TaskGroup() as group:
            for name, (base, workspace) in bases.items():
                group.create_task(start(name, base, workspace), name=f"code-server-{name}")
        yield started
    finally:
        for server in started.values():
            server.stop()


async def explorer_shows(page: Page, name: str) -> None:
    row = page.locator(f'.explorer-folders-view .monaco-list-row[aria-label^="{name}"]')
    await row.wait_for(state="visible", timeout=120_000)


async def serving(pb: ParkBed, role: str, url: str) -> bool:
    status = await pb.status()
    return bool(await pb.serving(role) and status["backends"][role]["url"] == url)


@pytest.mark.timeout(420)
async def test_park_keep_it_and_resume_as_the_user_sees_them(
    clouds: FakeClouds,
    sync_bed: SyncBed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bed = sync_bed
    view = tmp_path / "view" / "workspace"
    view.mkdir(parents=True)
    launcher = tmp_path / "launcher" / "bin" / "code-server"
    launcher.parent.mkdir(parents=True)
    script = LAUNCHER.replace("@REAL@", str(find_launcher())).replace("@VIEW@", str(view))
    launcher.write_text(script)
    launcher.chmod(0o755)
    monkeypatch.setenv("DUMONT_CODE_SERVER_HOME", str(launcher.parent.parent))
    (bed.gpu_workspace / "train.py").write_text("EPOCHS = 1\n")
    # Nothing the proxy sees: without it the workbench forwards every port sshd and lsyncd open
    # and covers the page with notifications about them.
    settings = json.dumps(QUIET_SETTINGS | {"remote.autoForwardPorts": False})
    for user_data in (bed.gpu_user_data, bed.standby_user_data):
        (user_data / "User").mkdir(parents=True)
        (user_data / "User" / "settings.json").write_text(settings)
    bed.standby_workspace.mkdir(parents=True)  # lsyncd fills it; code-server opens it first
    expect.set_options(timeout=120_000)
    texts: list[str] = []

    machines = {
        "gpu": (bed.root / "gpu", bed.gpu_workspace),  # user data: bed.gpu_user_data
        "standby": (bed.root / "standby", bed.standby_workspace),
    }
    async with code_servers(machines) as started:
        gpu, standby = started["gpu"], started["standby"]
        # Health checks with room for two code-servers and Chromium on two cores.
        health = ("--health-timeout=5", "--fall=3", "--rise=2")
        async with (
            park_bed(
                clouds, bed, tmp_path, resume_hook=True,
                backends=(gpu.url, standby.url), proxy_flags=health, sync_delay=5,
            ) as pb,
            chromium() as browser,
        ):  # fmt: skip
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.expose_function("dumontParkText", lambda text: texts.append(text))
            await page.add_init_script(WATCH_PARK)
            await open_workbench(page, f"{pb.public}/?folder={view}", PASSWORD, timeout_ms=120_000)
            await explorer_shows(page, "train.py")
            notice = page.locator(".dumont-watcher-notice.dumont-park")
            gpu_id = PairStore(pb.store).get(PAIR).gpu_instance_id

            # Idle: the notice two minutes before, and Keep it postpones the park.
            smi = fake_nvidia_smi(tmp_path / "smi", "0\n")
            autopark_log = tmp_path / "autopark.err"
            flags = (f"--nvidia-smi={smi}", "--park-after=121", "--announce=120")
            async with pair_process(pb, "autopark", autopark_log, *flags, "--check-interval=0.5"):
                await expect(notice.locator("p")).to_have_text(
                    "GPU idle for 0 min: parking it in 2 min."
                )
                clicked = time.time()
                await notice.get_by_role("button", name="Keep it").click()
                await until(
                    lambda: "park postponed" in autopark_log.read_text(), "autopark's keep", 60
                )
                assert (await pb.park_state())["keep_until"] >= clicked + 121 - 1
            # autopark would park 121 s after the click; the operator parks now instead.
            assert PairStore(pb.store).get(PAIR).state is PairState.READY
            assert gpu_id in clouds.vast.instances

            # Park, with a file saved 100 ms before: lsyncd (delay 5 s) has not sent it, and
            # will not before the flush stops it; the flush's final pass must carry it.
            (bed.gpu_workspace / "train.py").write_text("EPOCHS = 3  # saved just now\n")
            await asyncio.sleep(0.1)
            standby_train = bed.standby_workspace / "train.py"
            assert standby_train.read_text() == "EPOCHS = 1\n"
            assert await pb.pair_cli("park") == 0, capsys.readouterr().err
            assert standby_train.read_text() == "EPOCHS = 3  # saved just now\n"
            passes = re.search(r"standby verified: (\d+) files", capsys.readouterr().err)
            assert passes is not None
            assert int(passes[1]) >= 1
            assert gpu_id not in clouds.vast.instances
            assert await serving(pb, "standby", standby.url + "/")
            # The GPU instance is gone, and its code-server and disks with it.
            gpu.stop()
            for path in (bed.gpu_workspace, bed.gpu_user_data, bed.gpu_state):
                shutil.rmtree(path)
            bed.gpu_state.mkdir()

            # The watcher reloaded the IDE onto the standby: the user's files, the parked notice.
            await expect(notice.locator("p")).to_have_text(
                "GPU parked: you're on the CPU machine, your files are here."
            )
            await explorer_shows(page, "train.py")
            # The user edits in the IDE on the standby, and saves.
            await page.locator(
                '.explorer-folders-view .monaco-list-row[aria-label^="train.py"]'
            ).click()
            editor = page.locator(".editor-instance .monaco-editor .view-lines")
            await editor.wait_for(timeout=120_000)
            await expect(editor).to_contain_text("saved just now")
            await editor.click()
            await page.keyboard.press("Control+A")
            await page.keyboard.type(EDIT)
            await page.keyboard.press("Control+S")
            await until(lambda: standby_train.read_text().strip() == EDIT, "the saved edit", 60)
            (bed.standby_workspace / "while-parked.md").write_text("# from a terminal\n")

            # Bring the GPU back from the IDE's notice. The new GPU's code-server comes up once
            # its files are there: provisioning registers it with the proxy after the fill.
            new_port = free_port()
            clouds.vast.code_server_port = new_port
            new_url = f"http://127.0.0.1:{new_port}/"
            await notice.get_by_role("button", name="Bring the GPU back").click()

            async def registered() -> bool:
                return bool((await pb.status())["backends"]["primary"]["url"] == new_url)

            await until(registered, "the new GPU registered with the proxy", 240)
            monkeypatch.setenv("PARK_BED_BIND", str(new_port))
            bed.gpu_workspace.mkdir(exist_ok=True)
            new_machine = {"new-gpu": (bed.root / "gpu", bed.gpu_workspace)}
            async with code_servers(new_machine):
                await until(lambda: serving(pb, "primary", new_url), "the failback", 240)
                # The watcher reloaded the IDE onto the new GPU and says how long it took.
                back = re.compile(r"GPU back in \d+ s\.")
                await expect(notice.locator("p")).to_have_text(back)
                await explorer_shows(page, "while-parked.md")

                assert (bed.gpu_workspace / "train.py").read_text().strip() == EDIT
                assert (bed.gpu_workspace / "while-parked.md").exists()
                pair = PairStore(pb.store).get(PAIR)
                assert (pair.state, pair.gpu_generation) == (PairState.READY, 2)
                park = await pb.park_state()
                assert park["phase"] == "active", park
                assert park["last_resume_s"] > 0

    # What the IDE said, in order: the resume's progress came before the time it took.
    resuming = [t for t in texts if t.startswith("Bringing the GPU back: ")]
    assert "Bringing the GPU back: filling the GPU with your files" in resuming, texts
    assert any(back.fullmatch(t) for t in texts), texts
    assert texts.index(resuming[-1]) < max(i for i, t in enumerate(texts) if back.fullmatch(t))
