"""Idle detection (issue 18): nvidia-smi's answers parsed, the idle clock's announce / keep / park
timing, and ``pair idle`` / ``pair autopark`` reading a fake nvidia-smi on the GPU over real SSH."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from provisioning.errors import SyncError
from provisioning.gpu_idle import GpuSample, IdleClock, parse_nvidia_smi
from provisioning.store import PairState, PairStore
from tests.provisioning.conftest import FakeClouds, SyncBed
from tests.provisioning.park_bed import PAIR, park_bed, until

MARK = "@@dumont-compute-apps@@"

# Answers the two queries the way nvidia-smi 550 prints them with these --format options; the
# test sets what it says through two files next to it.
FAKE_NVIDIA_SMI = """#!/bin/sh
here=$(dirname "$0")
case "$*" in
  *--query-gpu=utilization.gpu*) cat "$here/utilization" ;;
  *--query-compute-apps=pid*) cat "$here/pids" 2>/dev/null ;;
  *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def fake_nvidia_smi(directory: Path, utilization: str, pids: str = "") -> Path:
    directory.mkdir(exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI)
    script.chmod(0o755)
    (directory / "utilization").write_text(utilization)
    (directory / "pids").write_text(pids)
    return script


def test_parse_takes_the_busiest_gpu_and_the_compute_processes() -> None:
    sample = parse_nvidia_smi(f"3\n41\n{MARK}\n1234\n5678\n")
    assert sample == GpuSample(41.0, (1234, 5678))
    assert parse_nvidia_smi(f"0\n{MARK}\n") == GpuSample(0.0, ())
    assert parse_nvidia_smi(f"0\n{MARK}\n").idle(5.0)
    assert not GpuSample(0.0, (99,)).idle(5.0)  # a process holds the GPU: not idle
    assert not GpuSample(5.0, ()).idle(5.0)


@pytest.mark.parametrize(
    "output",
    ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
     f"N/A\n{MARK}\n", f"{MARK}\n"],
)  # fmt: skip
def test_parse_refuses_what_it_does_not_understand(output: str) -> None:
    with pytest.raises(SyncError) as caught:
        parse_nvidia_smi(output)
    assert "\n" not in str(caught.value)


def test_idle_clock_announces_then_parks_and_keep_postpones_by_park_after() -> None:
    clock = IdleClock(threshold=5.0, park_after=1800.0, announce_before=120.0)
    idle, busy = GpuSample(1.0, ()), GpuSample(80.0, ())
    assert clock.observe(idle, 0.0) == "idle"
    assert clock.observe(idle, 1679.0) == "idle"
    assert clock.observe(idle, 1680.0) == "announce"  # 28 min: "parking it in 2 min"
    assert clock.park_in(1680.0) == 120.0
    clock.keep(1700.0)  # the user clicked Keep it
    assert clock.observe(idle, 1800.0) == "idle"
    assert clock.observe(idle, 1700.0 + 1800.0) == "park"
    assert clock.observe(busy, 3600.0) == "busy"  # any work restarts the count
    assert clock.observe(idle, 3601.0) == "idle"
    assert clock.idle_for(3611.0) == 10.0


@pytest.mark.slow
async def test_pair_idle_reads_nvidia_smi_on_the_gpu_and_autopark_honours_keep_it(
    clouds: FakeClouds, sync_bed: SyncBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smi = fake_nvidia_smi(tmp_path / "smi", "0\n", "4242\n")
    async with park_bed(clouds, sync_bed, tmp_path) as pb:
        assert await pb.pair_cli("idle", f"--nvidia-smi={smi}") == 0
        assert capsys.readouterr().out == "busy: utilization 0 %, compute processes 4242\n"
        (smi.parent / "pids").write_text("")  # the training job ended
        assert await pb.pair_cli("idle", f"--nvidia-smi={smi}") == 0
        assert capsys.readouterr().out == "idle: utilization 0 %, compute processes none\n"

        flags = (f"--nvidia-smi={smi}", "--park-after=4", "--announce=3", "--check-interval=0.2")
        async with asyncio.TaskGroup() as group:
            autopark = group.create_task(pb.pair_cli("autopark", *flags), name="autopark")

            async def announced() -> bool:
                return bool((await pb.park_state())["phase"] == "idle")

            await until(announced, "the idle notice", 60)
            detail = (await pb.park_state())["detail"]
            assert re.fullmatch(r"GPU idle for \d s: parking it in \d s", detail), detail
            response = await pb.client.post(f"{pb.control}/admin/park/keep", headers=pb.headers)
            assert response.status_code == 200, response.text
            kept_at = time.time()
        assert autopark.result() == 0, capsys.readouterr().err
        started = next(e.at for e in PairStore(pb.store).events(PAIR) if e.kind == "park-started")
        # Keep it gave another park_after (4 s) from the click; the last sample may be 0.2 s early.
        assert started - kept_at >= 4.0 - 0.5
        assert PairStore(pb.store).get(PAIR).state is PairState.PARKED
        assert "the user kept the GPU: park postponed" in capsys.readouterr().err
