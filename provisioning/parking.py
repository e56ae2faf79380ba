"""Park the idle GPU, keep working on the standby, bring a GPU back on demand (issue 18).

    switchover: preflight -> flush (final pass, verified) -> fence -> proxy to the standby
    park:       switchover ("park: ...") -> snapshot on the GPU -> destroy (or stop) the GPU
    resume:     rent (or start) a GPU -> snapshot restore + reverse sync -> register -> failback

Never lose work: the GPU is touched only after the flush verified the standby file by file and
the snapshot completed; if either fails the GPU keeps running and the error is one line (also
reported to the proxy for the IDE and the dashboard). Park is refused unless the pair is ready,
both machines run, the sync is healthy and the proxy serves the GPU with a healthy standby.

Every step is recorded in the store (``park-started``, ``park-snapshot-done``, ``resume-started``,
``resume-rented``, ``resume-filled``: the new GPU holds the files and is the proxy's primary), so
``pair reconcile`` finishes or rolls back a process killed anywhere (PairService.reconcile).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provisioning.errors import (
    NoOfferError,
    ProvisioningError,
    ProxyAdminError,
    StateConflict,
    SyncError,
    UsageError,
)
from provisioning.fence import unfence_standby
from provisioning.flush import FlushReport, flush_to_standby
from provisioning.progress import Progress, quiet
from provisioning.proxy_admin import ParkPhase, proxy_status, report_park, switch, wait_for
from provisioning.remote_snapshot import RemoteSnapshots, workspace_root
from provisioning.ssh import SshHost
from provisioning.store import Pair, PairState
from provisioning.sync import SyncController
from provisioning.vast import VastInstance

if TYPE_CHECKING:
    # google-cloud-compute takes seconds to import: `pair gpu-lost` only needs the PLANNED_* names.
    from provisioning.gcp import StandbyVm
    from provisioning.pairing import PairService

__all__ = [
    "PLANNED_CAUSES",
    "PLANNED_REASONS",
    "ParkMode",
    "ParkRefused",
    "ParkReport",
    "Parking",
    "ProxyControl",
    "ResumeReport",
]

ParkMode = Literal["destroy", "stop"]
# The proxy passes the switch's cause to on_failover as DUMONT_CAUSE (and its reason as
# DUMONT_REASON): `pair gpu-lost` leaves these planned switches alone.
PLANNED_CAUSES = frozenset({"park", "switchover"})
PLANNED_REASONS = ("park:", "switchover:")

ControllerFor = Callable[[Pair, VastInstance, "StandbyVm"], SyncController]
SnapshotsFor = Callable[[SshHost], RemoteSnapshots]
Filler = Callable[[Pair, VastInstance, "StandbyVm"], Awaitable[None]]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class ParkRefused(ProvisioningError):
    """A precondition of a planned switch is not met; nothing was touched."""


@dataclass(frozen=True)
class ProxyControl:
    """The proxy's control API; reports to it are best effort, switches through it are not."""

    url: str
    token: str = ""
    switch_timeout: float = 600.0
    # The pair's workspace at a proxy that serves many (issue 15); None: the proxy's default.
    workspace: str | None = None

    async def report(self, phase: ParkPhase, progress: Progress, **fields: Any) -> None:
        try:
            await report_park(self.url, self.token, phase, workspace=self.workspace, **fields)
        except ProxyAdminError as exc:
            progress(f"warning: park state not reported to the proxy: {exc}")

    async def status(self) -> dict[str, Any]:
        return await proxy_status(self.url, self.token, workspace=self.workspace)

    async def wait(self, what: str, ready: Callable[[dict[str, Any]], bool]) -> None:
        await wait_for(
            self.url,
            self.token,
            what,
            ready,
            timeout=self.switch_timeout,
            workspace=self.workspace,
        )

    async def switch_to(
        self,
        role: Literal["standby", "primary"],
        reason: str,
        cause: Literal["park", "switchover", "resume"],
    ) -> None:
        await switch(self.url, self.token, role, reason, cause=cause, workspace=self.workspace)
        await self.wait(
            f"serve the {role}",
            lambda s: s.get("active") == role and s.get("state") == f"serving_{role}",
        )


@dataclass(frozen=True)
class ParkReport:
    flush: FlushReport
    mode: ParkMode
    snapshot: str
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumeReport:
    gpu: VastInstance
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


class Parking:
    def __init__(
        self,
        service: PairService,
        controller_for: ControllerFor,
        *,
        proxy: ProxyControl | None = None,
        snapshots_for: SnapshotsFor | None = None,
        progress: Progress = quiet,
        timeout: float = 3600.0,
    ) -> None:
        self._service = service
        self._store = service.store
        self._controller_for = controller_for
        self._proxy = proxy
        self._snapshots_for = snapshots_for
        self._progress = progress
        self._timeout = timeout

    @property
    def service(self) -> PairService:
        return self._service

    async def announce(self, idle_s: float, park_in_s: float, park_after_s: float) -> None:
        """The IDE notice two minutes before: "GPU idle for 28 min: parking it in 2 min"."""
        detail = f"GPU idle for {_duration(idle_s)}: parking it in {_duration(park_in_s)}"
        await self._report(
            "idle", detail=detail, idle_s=idle_s, park_in_s=park_in_s, park_after_s=park_after_s
        )

    # -- switchover --------------------------------------------------------------------------

    async def switchover(self, pair_id: str, reason: str = "switchover: requested") -> FlushReport:
        """Move the user to the standby with nothing lost; the GPU is left running."""
        _pair, _gpu, _standby, controller = await self._preflight(pair_id)
        return await self._flush_fence_switch(controller, reason, "switchover")

    async def _preflight(
        self, pair_id: str
    ) -> tuple[Pair, VastInstance, StandbyVm, SyncController]:
        pair = self._store.get(pair_id)
        if pair.state is not PairState.READY:
            raise ParkRefused(f"pair {pair_id} is {pair.state.value}, not ready")
        # The proxy first: a switch or failback under way explains everything else.
        if self._proxy is not None:
            seen = await self._proxy.status()
            if seen.get("state") != "serving_primary":
                raise ParkRefused(
                    f"the proxy is {seen.get('state')}, not serving the GPU"
                    " (a failback or a switch is running)"
                )
            if seen.get("backends", {}).get("standby", {}).get("healthy") is not True:
                raise ParkRefused("the proxy sees the standby's code-server down")
        gpu = await self._service.current_gpu(pair)
        if gpu is None or not gpu.running:
            raise ParkRefused(f"the GPU of {pair_id} is not running")
        standby = await self._service.standbys.find(pair.standby_name)
        if standby is None or standby.stopped:
            raise ParkRefused(f"the standby {pair.standby_name} is missing (preempted or deleted)")
        controller = self._controller_for(pair, gpu, standby)
        status = await controller.status(probe=False)
        if status.problems:
            raise ParkRefused(f"the sync is degraded: {status.problems[0]}")
        return pair, gpu, standby, controller

    async def _flush_fence_switch(
        self, controller: SyncController, reason: str, cause: Literal["park", "switchover"]
    ) -> FlushReport:
        flush = await flush_to_standby(controller, progress=self._progress, timeout=self._timeout)
        await controller.fence()
        if self._proxy is None:
            self._progress("standby verified and fenced; no --proxy-control: switch it yourself")
            return flush
        self._progress(f"switching the proxy to the standby ({reason})")
        try:
            await self._proxy.switch_to("standby", reason, cause)
        except ProvisioningError:
            # Only while the user is certainly still on the GPU may its files flow again; a
            # switch that went through after all (or is still running) keeps the standby fenced.
            seen = await self._proxy.status()
            if seen.get("state") == "serving_primary":
                t = controller.topology
                await unfence_standby(t.standby, t.standby_state_dir)
                await controller.start()
            raise
        return flush

    # -- park --------------------------------------------------------------------------------

    async def park(self, pair_id: str, mode: ParkMode, reason: str) -> ParkReport:
        if mode == "destroy" and self._snapshots_for is None:
            raise UsageError(
                "park destroys the GPU: pass --snapshot-destination (or --park-mode stop)"
            )
        started = time.monotonic()
        steps: dict[str, float] = {}
        try:
            pair, gpu, _standby, controller = await self._preflight(pair_id)
        except ParkRefused as exc:
            await self._report("active", detail=f"park refused: {exc}", outcome="refused")
            raise
        self._store.update(pair, state=PairState.PARKING)
        self._store.record(pair.id, "park-started", reason)
        if mode == "stop":
            self._store.record(pair.id, "park-mode-stop")
        await self._report("parking", detail="copying your files to the CPU machine")
        try:
            flush = await self._flush_fence_switch(controller, f"park: {reason}", "park")
            steps["flush_and_switch"] = time.monotonic() - started
            snapshot = ""
            if self._snapshots_for is not None:
                await self._report("parking", detail="snapshotting the GPU's workspace")
                snapshot = await self._snapshot(controller)
                steps["snapshot"] = time.monotonic() - started - sum(steps.values())
            self._store.record(pair.id, "park-snapshot-done", snapshot)
        except ProvisioningError as exc:
            self._store.update(self._store.get(pair.id), state=PairState.READY)
            self._store.record(pair.id, "park-failed", str(exc))
            await self._report(
                "park_failed", detail=f"the GPU keeps running: {exc}", outcome="failed"
            )
            raise
        await self._service.retire_gpu(pair, gpu, mode)
        steps["retire"] = time.monotonic() - started - sum(steps.values())
        self._store.update(
            self._store.get(pair.id),
            state=PairState.PARKED,
            gpu_instance_id=gpu.id if mode == "stop" else None,
        )
        seconds = time.monotonic() - started
        self._store.record(pair.id, "parked", f"{mode}, {seconds:.1f} s")
        price = gpu.raw.get("dph_total")
        await self._report(
            "parked",
            detail="GPU parked: you're on the CPU machine, your files are here",
            outcome="parked",
            gpu_per_hour=float(price) if isinstance(price, int | float) else None,
        )
        return ParkReport(flush, mode, snapshot, seconds, steps)

    async def _snapshot(self, controller: SyncController) -> str:
        assert self._snapshots_for is not None
        t = controller.topology
        remote = self._snapshots_for(t.gpu)
        root = workspace_root(t)
        excludes = tuple(p.rstrip("/") for p in (*root.excludes, *t.settings.extra_excludes))
        try:
            await remote.install()
            return await remote.create(root.gpu_path, excludes=excludes)
        except SyncError as exc:
            raise SyncError(f"snapshot failed: {exc}") from exc

    # -- resume ------------------------------------------------------------------------------

    async def resume(self, pair_id: str, fill: Filler, *, next_try: str = "") -> ResumeReport:
        """Rent (or start) a GPU, fill it (``fill``: snapshot + reverse sync + register it as the
        proxy's primary), then fail back through the proxy's before_failback reverse sync.
        ``next_try``: when the caller looks for an offer again, told to the user if none matches."""
        pair = self._store.get(pair_id)
        if pair.state is not PairState.PARKED:
            hint = " (run pair reconcile)" if pair.state is PairState.RESUMING else ""
            raise StateConflict(f"pair {pair_id} is {pair.state.value}, not parked{hint}")
        started = time.monotonic()
        steps: dict[str, float] = {}
        mode: ParkMode = "stop" if pair.gpu_instance_id is not None else "destroy"
        pair = self._store.update(pair, state=PairState.RESUMING)
        self._store.record(pair.id, "resume-started", mode)
        if mode == "stop":
            self._store.record(pair.id, "resume-mode-stop")
        try:
            await self._report("resuming", detail="renting a GPU", step="renting")
            gpu = await self._bring_gpu(pair, mode)
            steps["rent"] = time.monotonic() - started
            self._store.record(pair.id, "resume-rented", str(gpu.id))
            await self._report("resuming", detail="filling the GPU with your files", step="filling")
            standby = await self._service.standbys.get(pair.standby_name)
            await fill(self._store.get(pair.id), gpu, standby)
            steps["fill"] = time.monotonic() - started - sum(steps.values())
            # From here on the GPU holds the user's files and is the proxy's primary: reconcile
            # finishes this resume rather than destroy it.
            self._store.record(pair.id, "resume-filled", str(gpu.id))
            if self._proxy is not None:
                await self._report("resuming", detail="switching to the GPU", step="switching")
                await self._proxy.wait(
                    "see the new GPU healthy",
                    lambda s: s.get("backends", {}).get("primary", {}).get("healthy") is True,
                )
                seen = await self._proxy.status()
                if seen.get("state") != "serving_primary":  # else: it went home by itself
                    await self._proxy.switch_to("primary", f"resume: GPU {gpu.id} filled", "resume")
                steps["switch"] = time.monotonic() - started - sum(steps.values())
        except NoOfferError as exc:
            await self._service.roll_back_resume(self._store.get(pair.id), mode)
            retry = f"; next try {next_try}" if next_try else ""
            await self._report("parked", detail=f"no GPU offer matches, still parked: {exc}{retry}")
            raise
        except ProvisioningError as exc:
            await self._service.roll_back_resume(self._store.get(pair.id), mode)
            await self._report("resume_failed", detail=str(exc))
            raise
        seconds = time.monotonic() - started
        self._store.update(self._store.get(pair.id), state=PairState.READY)
        self._store.record(pair.id, "resumed", f"{seconds:.1f} s")
        await self._report("active", detail=f"GPU back in {seconds:.0f} s", resume_s=seconds)
        return ResumeReport(gpu, seconds, steps)

    async def _bring_gpu(self, pair: Pair, mode: ParkMode) -> VastInstance:
        if mode == "stop":
            assert pair.gpu_instance_id is not None
            self._progress(f"starting the stopped GPU instance {pair.gpu_instance_id}")
            await self._service.vast.set_instance_state(pair.gpu_instance_id, "running")
            gpu = await self._service.vast.show_instance(pair.gpu_instance_id)
            return await self._service.wait_gpu_running(gpu)
        # Intent first: the next generation's label is what reconcile looks for after a crash.
        pair = self._store.update(
            pair, gpu_generation=pair.gpu_generation + 1, gpu_instance_id=None
        )
        self._store.record(pair.id, "gpu-replacement", pair.gpu_label)
        return await self._service.rent_gpu(pair)

    async def _report(self, phase: ParkPhase, **fields: Any) -> None:
        if self._proxy is not None:
            await self._proxy.report(phase, self._progress, **fields)
        if fields.get("detail"):
            self._progress(fields["detail"])
