"""Fencing tokens on the standby with real sshd, rsync and lsyncd (issue 16): a deposed proxy
leader's late hook changes nothing.

The CLI lines are the hooks' (docs/PROVISIONING.md); the token arrives as --fencing-token or, as
the proxy's leader hands it over, DUMONT_FENCING_TOKEN.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.errors import RemoteCommandError, StaleFencingToken
from provisioning.fence import claim_fencing_token, is_fenced
from provisioning.fencing_token import ENV_VAR, TOKEN_REFUSED, token_guard
from provisioning.reverse_sync import reverse_sync
from provisioning.ssh import run_remote
from provisioning.sync import SyncController
from proxy.hooks import run_hook
from tests.provisioning.test_prov_fence import start_synced
from tests.support.processes import kill_group_async
from tests.support.sync_bed import SyncBed, start_provision_cli
from tests.support.waiting import until

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_inherited_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads DUMONT_FENCING_TOKEN from its environment: a stray one would change the tests.
    monkeypatch.delenv(ENV_VAR, raising=False)


def cli(*args: str, token: int | str | None = None) -> subprocess.CompletedProcess[str]:
    """dumont-provision as a hook runs it; ``token`` arrives the way the leader passes it."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if token is not None:
        env[ENV_VAR] = str(token)
    return subprocess.run(
        [sys.executable, "-m", "provisioning.cli", *args],
        capture_output=True,
        text=True,
        timeout=150,
        start_new_session=True,
        check=False,
        env=env,
    )


def recorded(bed: SyncBed) -> str | None:
    path = bed.standby_state / "fencing-token"
    return path.read_text().strip() if path.exists() else None


def assert_refused(result: subprocess.CompletedProcess[str], token: int, seen: int) -> None:
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, whatever the remote shell said
    assert lines[0].startswith(
        f"dumont-provision: error: fencing token {token} refused: standby root@127.0.0.1:"
    )
    assert f"has already seen token {seen} from a newer decision" in lines[0]


async def lsyncd_running(controller: SyncController) -> bool:
    return (await controller.lsyncd_report()).running


async def test_an_older_fence_flush_or_unfence_is_refused_and_changes_nothing(
    sync_bed: SyncBed,
) -> None:
    bed = sync_bed
    controller = await start_synced(bed, delete="running")
    flags = bed.cli_flags()

    # The new leader fails over (token 7), then fails back (token 8): syncing again.
    assert cli("sync", "fence", *flags, token=7).returncode == 0
    assert recorded(bed) == "7"
    assert cli("sync", "unfence", "--fencing-token=8", *flags).returncode == 0
    assert recorded(bed) == "8"
    await controller.start()
    await until(lambda: lsyncd_running(controller), "lsyncd to run again")

    # The deposed leader's failover hook (token 5) arrives late.
    late = cli("sync", "fence", *flags, token=5)
    assert_refused(late, 5, 8)
    assert "the fence is left as it was" in late.stderr
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert await lsyncd_running(controller), "a refused fence stopped the GPU's lsyncd"
    assert recorded(bed) == "8"
    (bed.gpu_workspace / "still-flowing.txt").write_text("forward sync untouched\n")
    await until(
        lambda: (bed.standby_workspace / "still-flowing.txt").exists(), "forward sync after"
    )

    # So does the deposed leader's late switchover: lsyncd is not even stopped for the flush.
    assert_refused(cli("sync", "flush", *flags, token=6), 6, 8)
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert await lsyncd_running(controller), "a refused flush stopped the GPU's lsyncd"

    # Equal passes (a retried hook); then an older unfence cannot lift the newer fence.
    assert cli("sync", "fence", "--fencing-token=8", *flags).returncode == 0
    assert_refused(cli("sync", "unfence", *flags, token=6), 6, 8)
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert recorded(bed) == "8"


async def test_an_older_reverse_sync_is_refused_before_anything_moves(sync_bed: SyncBed) -> None:
    bed = sync_bed
    controller = await start_synced(bed, delete="running")
    flags = bed.cli_flags()
    assert cli("sync", "fence", *flags, token=7).returncode == 0
    (bed.standby_workspace / "during.txt").write_text("written on the standby\n")
    before = sorted(p.name for p in bed.gpu_workspace.iterdir())

    late = cli("sync", "reverse", *flags, token=5)
    assert_refused(late, 5, 7)
    assert "nothing was changed" in late.stderr
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert sorted(p.name for p in bed.gpu_workspace.iterdir()) == before
    assert not (bed.gpu_state / "reverse-backups").exists()
    assert not await lsyncd_running(controller)
    assert recorded(bed) == "7"

    # The leader that fenced fails back with its own token: equal passes.
    home = cli("sync", "reverse", "--fencing-token=7", *flags)
    assert home.returncode == 0, home.stderr
    assert (bed.gpu_workspace / "during.txt").read_text() == "written on the standby\n"
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert recorded(bed) == "7"
    # A newer leader's next failover: higher passes and is recorded.
    assert cli("sync", "fence", *flags, token=12).returncode == 0
    assert recorded(bed) == "12"


async def test_a_newer_fence_during_a_reverse_sync_keeps_the_standby_fenced(
    sync_bed: SyncBed,
) -> None:
    """The check at the start is not enough for a step that takes minutes: a newer leader may
    fence while the copy runs, and the old reverse sync must not lift that fence at its end."""
    bed = sync_bed
    controller = await start_synced(bed, delete="running")
    assert cli("sync", "fence", *bed.cli_flags(), token=5).returncode == 0

    def newer_leader_fences_meanwhile(message: str) -> None:
        if message.startswith("verifying"):  # the copy is done, the unfence not yet
            assert cli("sync", "fence", *bed.cli_flags(), token=9).returncode == 0

    with pytest.raises(StaleFencingToken, match="has already seen token 9") as caught:
        await reverse_sync(
            controller,
            progress=newer_leader_fences_meanwhile,
            fencing_token=5,
            first_sync_timeout=60,
        )
    assert "the standby stays fenced and forward sync stays stopped" in str(caught.value)
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert not await lsyncd_running(controller)
    assert recorded(bed) == "9"


async def test_without_a_token_nothing_is_checked_or_recorded(sync_bed: SyncBed) -> None:
    bed = sync_bed
    await SyncController(bed.topology()).deploy(start=False)
    flags = bed.cli_flags()
    assert cli("sync", "fence", *flags).returncode == 0
    assert cli("sync", "unfence", *flags).returncode == 0
    assert not (bed.standby_state / "fencing-token").exists()  # one proxy: as before issue 16
    # With a token on record, an operator's hand-typed unfence is still obeyed (and leaves the
    # record alone).
    assert cli("sync", "fence", *flags, token=9).returncode == 0
    assert cli("sync", "unfence", *flags).returncode == 0
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert recorded(bed) == "9"


async def test_malformed_tokens_stop_the_cli_before_the_standby_is_touched(
    sync_bed: SyncBed,
) -> None:
    bed = sync_bed
    await SyncController(bed.topology()).deploy(start=False)
    for verb in ("fence", "reverse"):
        result = cli("sync", verb, "--fencing-token=0", *bed.cli_flags())
        assert result.returncode == 2
        assert result.stderr == (
            "dumont-provision: error: bad --fencing-token '0': expected a positive integer"
            " (the etcd revision of the decision)\n"
        )
    env_result = cli("sync", "fence", *bed.cli_flags(), token="12.5")
    assert env_result.returncode == 2
    assert env_result.stderr == (
        f"dumont-provision: error: bad {ENV_VAR} '12.5': expected a positive integer"
        " (the etcd revision of the decision)\n"
    )
    assert not await is_fenced(bed.sshd.host(), str(bed.standby_state))
    assert recorded(bed) is None


async def test_racing_fences_end_with_the_highest_token_recorded(sync_bed: SyncBed) -> None:
    bed = sync_bed
    await SyncController(bed.topology()).deploy(start=False)
    tokens = [3, 11, 7, 5, 13, 2]
    processes = [
        await start_provision_cli("sync", "fence", f"--fencing-token={t}", *bed.cli_flags())
        for t in tokens
    ]
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in processes)), 150
        )
    finally:
        for process in processes:
            await kill_group_async(process)
    for token, process, (_, err) in zip(tokens, processes, outcomes, strict=True):
        if process.returncode == 3:
            seen = int(err.decode().split("has already seen token ")[1].split()[0])
            assert seen > token
        else:
            assert process.returncode == 0, err.decode()
    assert processes[tokens.index(13)].returncode == 0  # the newest can never be refused
    assert recorded(bed) == "13"
    assert await is_fenced(bed.sshd.host(), str(bed.standby_state))


async def test_racing_steps_act_in_token_order(sync_bed: SyncBed) -> None:
    """Compare, record and act are one step: if two racing hooks could both read the old token,
    an older step could act after a newer one. Each accepted step appends its token to a log
    while it holds the lock; the log must never go down."""
    bed = sync_bed
    standby, state = bed.sshd.host(), str(bed.standby_state)
    bed.standby_state.mkdir()
    log = shlex.quote(str(bed.root / "acted"))
    tokens = list(range(1, 25))
    random.Random(16).shuffle(tokens)

    async def step(token: int) -> int:
        script = f"set -e; {token_guard(state, token, f'echo {token} >> {log}')}"
        try:
            await run_remote(standby, script)
        except RemoteCommandError as exc:
            return exc.returncode
        return 0

    codes = await asyncio.gather(*(step(t) for t in tokens))
    assert set(codes) <= {0, TOKEN_REFUSED}
    accepted = [code == 0 for code in codes]
    acted = [int(line) for line in (bed.root / "acted").read_text().split()]
    assert acted == sorted(acted)
    assert sorted(acted) == sorted(t for t, ok in zip(tokens, accepted, strict=True) if ok)
    assert acted[-1] == 24
    assert recorded(bed) == "24"
    # A claim is the same guard with nothing to do: an older one still fails, one line.
    with pytest.raises(StaleFencingToken, match=r"fencing token 23 refused: .* token 24 "):
        await claim_fencing_token(standby, state, 23)


async def test_the_proxys_hook_environment_carries_the_token_to_the_standby(
    sync_bed: SyncBed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proxy.hooks drops the proxy's own DUMONT_* and adds the event's: the leader's token
    reaches the command; a stale one in the proxy's environment does not."""
    bed = sync_bed
    await SyncController(bed.topology()).deploy(start=False)
    config = tmp_path / "provision.toml"
    bed.write_provision_config(config)
    command = f"{shlex.quote(sys.executable)} -m provisioning.cli --config {config} sync fence"
    monkeypatch.setenv(ENV_VAR, "99")  # the proxy's own environment, never a hook's
    done = await run_hook(command, {"DUMONT_EVENT": "before_failover", ENV_VAR: "12"}, 120)
    assert done.ok, done.detail
    assert recorded(bed) == "12"
    late = await run_hook(command, {"DUMONT_EVENT": "before_failover", ENV_VAR: "4"}, 120)
    assert not late.ok
    assert late.detail.startswith("exit 3: dumont-provision: error: fencing token 4 refused")
    assert recorded(bed) == "12"
