"""Is the GPU idle? Read on the GPU machine over the pair's admin SSH, decided here (issue 18).

Idle means: no compute process holds any GPU and utilization stays under a threshold (5 %) for
``park_after`` (30 min). ``nvidia-smi`` cannot combine ``--query-gpu`` and
``--query-compute-apps`` in one call (they are separate query modes), so one SSH command runs both
and separates the answers with a marker line.

``IdleClock`` is pure (samples and times in, a verdict out) so the announce / keep / park timing
is tested without a GPU; ``autopark`` in cli_park drives it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from provisioning.errors import SyncError
from provisioning.ssh import SshHost, run_remote

__all__ = ["GpuSample", "IdleClock", "IdleVerdict", "parse_nvidia_smi", "sample_gpu"]

_MARK = "@@dumont-compute-apps@@"


@dataclass(frozen=True)
class GpuSample:
    utilization: float  # percent, the busiest GPU of the machine
    compute_pids: tuple[int, ...]

    def idle(self, threshold: float) -> bool:
        return not self.compute_pids and self.utilization < threshold


def parse_nvidia_smi(output: str) -> GpuSample:
    """``utilization.gpu`` lines (csv, noheader, nounits), the marker, then compute-app pids."""
    gpus, _, apps = output.partition(_MARK)
    if not _:
        raise SyncError(f"unexpected nvidia-smi output: {output.strip()[:200]!r}")
    try:
        utilization = [
            float(line.strip().rstrip("%")) for line in gpus.splitlines() if line.strip()
        ]
        pids = tuple(int(line.split(",")[0]) for line in apps.splitlines() if line.strip())
    except ValueError as exc:
        raise SyncError(f"unexpected nvidia-smi output: {exc}") from exc
    if not utilization:
        raise SyncError("nvidia-smi reports no GPU")
    return GpuSample(max(utilization), pids)


async def sample_gpu(host: SshHost, nvidia_smi: str = "nvidia-smi") -> GpuSample:
    smi = shlex.quote(nvidia_smi)
    command = (
        f"{smi} --query-gpu=utilization.gpu --format=csv,noheader,nounits && echo {_MARK} &&"
        f" {smi} --query-compute-apps=pid --format=csv,noheader"
    )
    return parse_nvidia_smi(await run_remote(host, command, timeout=30))


IdleVerdict = Literal["busy", "idle", "announce", "park"]


@dataclass
class IdleClock:
    """Idle since when, and what to do about it.

    ``announce_before`` seconds before ``park_after`` the user is told (the IDE notice); "Keep it"
    (``keep``) starts a fresh ``park_after`` from that moment even if the GPU stays idle.
    """

    threshold: float = 5.0
    park_after: float = 1800.0
    announce_before: float = 120.0
    idle_since: float | None = None

    def observe(self, sample: GpuSample, now: float) -> IdleVerdict:
        if not sample.idle(self.threshold):
            self.idle_since = None
            return "busy"
        if self.idle_since is None:
            self.idle_since = now
        idle_for = now - self.idle_since
        if idle_for >= self.park_after:
            return "park"
        if idle_for >= self.park_after - self.announce_before:
            return "announce"
        return "idle"

    def keep(self, now: float) -> None:
        self.idle_since = now

    def idle_for(self, now: float) -> float:
        return 0.0 if self.idle_since is None else now - self.idle_since

    def park_in(self, now: float) -> float:
        return max(0.0, self.park_after - self.idle_for(now))
