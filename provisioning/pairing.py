"""GPU<->CPU pairs: one Vast.ai GPU, one Google Cloud standby, and the sync between them.

Every step is idempotent. The GPU is labelled ``dumont:<pair>:gpu:<generation>`` and the standby is
named ``dumont-<pair>-standby``, so a step retried after a crash finds what the first attempt made
instead of renting a second machine. The store records the intent before each cloud call; reconcile
compares the store with both clouds and repairs whatever a crash left behind.

User intent and accidents differ: ``destroy`` removes both machines; a spot interruption
(``gpu_lost``) keeps the standby serving; a GPU that vanished from Vast entirely was destroyed
by the user, so reconcile deletes its standby, which would otherwise cost money for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from provisioning.errors import (
    CloudNotFound,
    NoOfferError,
    ProvisioningError,
    StateConflict,
    StoreError,
    UsageError,
)
from provisioning.gcp import StandbySpec, StandbyVm, StandbyVms
from provisioning.progress import Progress, quiet
from provisioning.store import Pair, PairEvent, PairState, PairStore
from provisioning.vast import InstanceRequest, VastClient, VastInstance

__all__ = [
    "PAIR_LABEL",
    "GpuVerdict",
    "PairService",
    "PairSpec",
    "Repair",
    "standby_name_for",
    "validate_pair_id",
]

PAIR_LABEL = "dumont-pair"  # GCP label key tying a standby to its pair
_PAIR_ID = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_GPU_LABEL = re.compile(r"^dumont:([a-z][a-z0-9-]*):gpu:[0-9]+$")


def _steps_since(events: list[PairEvent], starts: tuple[str, ...]) -> set[str]:
    """The event kinds recorded since the last of ``starts`` (the current park or resume)."""
    steps: set[str] = set()
    for event in reversed(events):
        steps.add(event.kind)
        if event.kind in starts:
            break
    return steps


def validate_pair_id(pair_id: str) -> str:
    if not _PAIR_ID.match(pair_id):
        raise UsageError(
            f"bad pair id {pair_id!r}: a lowercase letter, then letters, digits or -, at most 40"
        )
    return pair_id


def standby_name_for(pair_id: str) -> str:
    return f"dumont-{pair_id}-standby"


@dataclass(frozen=True)
class PairSpec:
    """What a pair is made of; stored with the pair so reconcile can finish a creation."""

    gpu_query: Mapping[str, Any]
    image: str
    disk_gb: float
    standby_user: str
    ssh_public_key: str
    onstart: str = ""
    max_price: float | None = None
    termination_action: str = "STOP"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"gpu_query": dict(self.gpu_query)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairSpec:
        try:
            return cls(**data)
        except TypeError as exc:
            raise StoreError(f"stored pair spec is unreadable: {exc}") from exc


@dataclass(frozen=True)
class Repair:
    pair_id: str
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.pair_id}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class GpuVerdict:
    """What Vast says about a pair's GPU, combined with what the proxy saw."""

    lost: bool
    reason: str
    instance: VastInstance | None = field(default=None, compare=False)


ReplacementFiller = Callable[[Pair, VastInstance, StandbyVm], Awaitable[None]]


class PairService:
    def __init__(
        self,
        store: PairStore,
        vast: VastClient,
        standbys: StandbyVms,
        *,
        startup_script: Callable[[str, PairSpec], str],
        progress: Progress = quiet,
        poll_interval: float = 5.0,
        ready_timeout: float = 1200.0,
        before_destroy: Callable[[Pair], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._before_destroy = before_destroy
        self._vast = vast
        self._standbys = standbys
        self._startup_script = startup_script
        self._progress = progress
        self._poll_interval = poll_interval
        self._ready_timeout = ready_timeout

    @property
    def store(self) -> PairStore:
        return self._store

    @property
    def vast(self) -> VastClient:
        return self._vast

    @property
    def standbys(self) -> StandbyVms:
        return self._standbys

    # -- lifecycle verbs ---------------------------------------------------------------------

    async def create(self, pair_id: str, spec: PairSpec) -> Pair:
        """Create (or finish creating) a pair: the GPU first, then its standby."""
        validate_pair_id(pair_id)
        pair = self._store.insert(
            Pair(
                id=pair_id,
                state=PairState.CREATING,
                standby_name=standby_name_for(pair_id),
                spec=spec.to_json(),
            )
        )
        if pair.state is PairState.READY:
            return pair
        if pair.state is not PairState.CREATING:
            raise StateConflict(f"pair {pair_id} is {pair.state.value}; cannot create it again")
        return await self._finish_creation(pair)

    async def destroy(self, pair_id: str) -> Pair:
        """User intent: both machines go, including retired GPUs of earlier generations; first
        ``before_destroy`` (the proxy forgets the pair's workspace)."""
        pair = self._store.get(pair_id)
        if pair.state is PairState.DESTROYED:
            return pair
        pair = self._store.update(pair, state=PairState.DESTROYING)
        self._store.record(pair.id, "destroy-started")
        if self._before_destroy is not None:
            # The proxy stops routing to the pair before its machines go (issue 15): users see
            # the proxy's unknown-workspace page, never a backend that vanishes mid-request. A
            # failure here stops the destroy with the pair `destroying`: a retry or reconcile
            # runs this step again first.
            await self._before_destroy(pair)
        for gpu in await self._vast.list_instances(label_prefix=pair.gpu_label_prefix):
            self._progress(f"destroying GPU instance {gpu.id}")
            # Destroyed by someone else meanwhile: the goal is reached.
            with contextlib.suppress(CloudNotFound):
                await self._vast.destroy_instance(gpu.id)
        self._progress(f"deleting standby {pair.standby_name}")
        await self._standbys.delete(pair.standby_name)
        self._store.record(pair.id, "destroyed")
        return self._store.update(pair, state=PairState.DESTROYED, gpu_instance_id=None)

    async def machines(self, pair_id: str) -> tuple[VastInstance, StandbyVm]:
        """The pair's current GPU and its standby, as the clouds describe them now."""
        pair = self._store.get(pair_id)
        gpu = await self._current_gpu(pair)
        if gpu is None:
            raise StateConflict(f"pair {pair_id} has no GPU on Vast")
        return gpu, await self._standbys.get(pair.standby_name)

    async def check_gpu(self, pair_id: str, *, proxy_says_down: bool = False) -> GpuVerdict:
        """Poll Vast for the pair's GPU; ``proxy_says_down`` is the proxy's health view."""
        pair = self._store.get(pair_id)
        gpu = await self._current_gpu(pair)
        if gpu is None:
            return GpuVerdict(lost=True, reason="the GPU instance no longer exists on Vast")
        if gpu.lost:
            return GpuVerdict(True, f"Vast reports the GPU {gpu.actual_status}", gpu)
        if proxy_says_down:
            # Vast still sees it running: a partition or a dead code-server, not an interruption.
            return GpuVerdict(True, "the proxy sees the GPU down; Vast reports it running", gpu)
        return GpuVerdict(False, f"Vast reports the GPU {gpu.actual_status}", gpu)

    async def gpu_lost(
        self,
        pair_id: str,
        *,
        reason: str,
        replace: bool = False,
        fill: ReplacementFiller | None = None,
    ) -> Pair:
        """Spot interruption: keep the standby, mark the pair degraded, optionally replace the GPU.

        ``fill`` copies the standby's files to the replacement and registers it with the proxy;
        the pair is READY again only once it returned.
        """
        pair = self._store.get(pair_id)
        if pair.state not in (PairState.READY, PairState.DEGRADED):
            raise StateConflict(f"pair {pair_id} is {pair.state.value}, not ready or degraded")
        if pair.state is PairState.READY:
            pair = self._store.update(pair, state=PairState.DEGRADED)
            self._store.record(pair.id, "gpu-lost", reason)
        standby = await self._ensure_standby(pair)
        if not replace:
            return pair
        current = await self._current_gpu(pair)
        if pair.gpu_instance_id is not None and (current is None or current.lost):
            # Intent first: the next generation's label is what a retry will look for. A retry
            # after a crash finds gpu_instance_id None and adopts that generation's GPU instead.
            pair = self._store.update(
                pair, gpu_generation=pair.gpu_generation + 1, gpu_instance_id=None
            )
            self._store.record(pair.id, "gpu-replacement", pair.gpu_label)
        gpu = await self._ensure_gpu(pair)
        pair = self._store.get(pair.id)
        gpu = await self._wait_gpu_running(gpu)
        if fill is not None:
            await fill(pair, gpu, standby)
        self._store.record(pair.id, "gpu-replaced", str(gpu.id))
        return self._store.update(pair, state=PairState.READY)

    async def rent_gpu(self, pair: Pair) -> VastInstance:
        """The pair's GPU of its current generation, rented (cheapest matching offer) or adopted
        by label, once it runs."""
        return await self._wait_gpu_running(await self._ensure_gpu(pair))

    async def wait_gpu_running(self, gpu: VastInstance) -> VastInstance:
        return await self._wait_gpu_running(gpu)

    async def current_gpu(self, pair: Pair) -> VastInstance | None:
        return await self._current_gpu(pair)

    async def reconcile(
        self, pair_id: str | None = None, *, rollback: bool = False, delete_orphans: bool = False
    ) -> list[Repair]:
        """Compare the store with both clouds and repair the differences."""
        pairs = [self._store.get(pair_id)] if pair_id else self._store.list()
        repairs: list[Repair] = []
        for pair in pairs:
            repairs.extend(await self._reconcile_pair(pair, rollback=rollback))
        if pair_id is None:
            repairs.extend(await self._reconcile_orphans(delete=delete_orphans))
        for repair in repairs:
            self._store.record(repair.pair_id, "reconcile", f"{repair.action} {repair.detail}")
        return repairs

    # -- steps -------------------------------------------------------------------------------

    async def _finish_creation(self, pair: Pair) -> Pair:
        started = time.monotonic()
        gpu = await self._ensure_gpu(pair)
        pair = self._store.get(pair.id)
        await self._ensure_standby(pair)
        await self._wait_gpu_running(gpu)
        self._store.record(pair.id, "ready", f"{time.monotonic() - started:.0f} s")
        return self._store.update(pair, state=PairState.READY)

    async def _ensure_gpu(self, pair: Pair) -> VastInstance:
        """Find the GPU by label or rent the cheapest matching offer; store its id."""
        found = await self._vast.list_instances(label_prefix=pair.gpu_label)
        found = [g for g in found if g.label == pair.gpu_label]
        if found:
            gpu, *extras = sorted(found, key=lambda g: g.id)
            for extra in extras:  # two attempts raced: keep one, leak nothing
                await self._vast.destroy_instance(extra.id)
                self._store.record(pair.id, "gpu-duplicate-destroyed", str(extra.id))
        else:
            spec = PairSpec.from_json(pair.spec)
            self._progress(f"searching GPU offers for pair {pair.id}")
            offers = await self._vast.search_offers(spec.gpu_query)
            if spec.max_price is not None:
                offers = [o for o in offers if o.dph_total <= spec.max_price]
            if not offers:
                raise NoOfferError(f"no Vast offer matches {dict(spec.gpu_query)} for {pair.id}")
            offer = offers[0]
            self._progress(f"renting {offer.gpu_name} offer {offer.id} at ${offer.dph_total:.3f}/h")
            request = InstanceRequest(
                image=spec.image, disk_gb=spec.disk_gb, label=pair.gpu_label, onstart=spec.onstart
            )
            instance_id = await self._vast.create_instance(offer.id, request)
            self._store.record(pair.id, "gpu-created", str(instance_id))
            gpu = await self._vast.show_instance(instance_id)
        if pair.gpu_instance_id != gpu.id:
            self._store.update(pair, gpu_instance_id=gpu.id)
        return gpu

    async def _ensure_standby(self, pair: Pair) -> StandbyVm:
        standby = await self._standbys.find(pair.standby_name)
        if standby is None:
            spec = PairSpec.from_json(pair.spec)
            self._progress(f"creating standby VM {pair.standby_name} (about 90 s)")
            standby = await self._standbys.create(
                StandbySpec(
                    name=pair.standby_name,
                    labels={PAIR_LABEL: pair.id, "dumont-role": "standby"},
                    startup_script=self._startup_script(pair.id, spec),
                    ssh_user=spec.standby_user,
                    ssh_public_key=spec.ssh_public_key,
                    termination_action=spec.termination_action,
                )
            )
            self._store.record(pair.id, "standby-created", standby.name)
        elif standby.stopped:
            self._progress(f"starting stopped standby {standby.name}")
            await self._standbys.start(standby.name)
            standby = await self._standbys.get(standby.name)
            self._store.record(pair.id, "standby-started", standby.name)
        return standby

    async def _wait_gpu_running(self, gpu: VastInstance) -> VastInstance:
        deadline = time.monotonic() + self._ready_timeout
        last_status = ""
        while not gpu.running:
            if gpu.lost:
                raise ProvisioningError(f"GPU instance {gpu.id} is {gpu.actual_status}")
            if time.monotonic() > deadline:
                raise ProvisioningError(f"GPU instance {gpu.id} not running after waiting")
            if gpu.actual_status != last_status:
                self._progress(f"GPU instance {gpu.id} is {gpu.actual_status}")
                last_status = gpu.actual_status
            await asyncio.sleep(self._poll_interval)
            gpu = await self._vast.show_instance(gpu.id)
        return gpu

    async def _current_gpu(self, pair: Pair) -> VastInstance | None:
        if pair.gpu_instance_id is None:
            return None
        for gpu in await self._vast.list_instances(label_prefix=pair.gpu_label_prefix):
            if gpu.id == pair.gpu_instance_id:
                return gpu
        return None

    async def _reconcile_pair(self, pair: Pair, *, rollback: bool) -> list[Repair]:
        if pair.state is PairState.DESTROYING or (pair.state is PairState.CREATING and rollback):
            await self.destroy(pair.id)
            return [Repair(pair.id, "destroyed", f"was {pair.state.value}")]
        if pair.state is PairState.CREATING:
            await self._finish_creation(pair)
            return [Repair(pair.id, "creation finished")]
        if pair.state in (PairState.PARKING, PairState.PARKED, PairState.RESUMING):
            return await self._reconcile_parked(pair)
        repairs: list[Repair] = []
        gpus = await self._vast.list_instances(label_prefix=pair.gpu_label_prefix)
        if pair.gpu_instance_id is not None and not gpus and await self._gpu_gone(pair):
            # Nothing of this pair is left on Vast: the user destroyed the GPU there.
            await self.destroy(pair.id)
            return [Repair(pair.id, "standby deleted", "its GPU was destroyed on Vast")]
        current = next((g for g in gpus if g.id == pair.gpu_instance_id), None)
        if pair.state is PairState.READY and (current is None or current.lost):
            status = current.actual_status if current else "gone"
            pair = self._store.update(pair, state=PairState.DEGRADED)
            repairs.append(Repair(pair.id, "marked degraded", f"GPU {status}"))
        standby = await self._standbys.find(pair.standby_name)
        if standby is None or standby.stopped:
            await self._ensure_standby(pair)
            action = "standby recreated" if standby is None else "standby started"
            repairs.append(Repair(pair.id, action))
        if pair.gpu_instance_id is None and pair.state is PairState.DEGRADED:
            gpu = await self._ensure_gpu(pair)
            repairs.append(Repair(pair.id, "replacement GPU adopted", str(gpu.id)))
        return repairs

    async def _reconcile_parked(self, pair: Pair) -> list[Repair]:
        """Finish or roll back a park or resume a killed process left half done (issue 18).

        The store's events say how far it got: a park whose snapshot completed may destroy the GPU
        (the files are on the standby and in the snapshot); one that did not keeps the GPU and the
        pair is ready again (the proxy may serve the standby: failback brings the user home). A
        resume whose GPU was filled (and registered with the proxy) is finished; an earlier one is
        rolled back: the half-filled GPU is destroyed (or stopped again), never left running.
        """
        repairs: list[Repair] = []
        steps = _steps_since(self._store.events(pair.id), ("park-started", "resume-started"))
        gpu = await self._current_gpu(pair)
        mode = "stop" if {"park-mode-stop", "resume-mode-stop"} & steps else "destroy"
        if pair.state is PairState.PARKING:
            if gpu is None or gpu.actual_status == "stopped" or "park-snapshot-done" in steps:
                if gpu is not None and gpu.actual_status != "stopped":
                    await self.retire_gpu(pair, gpu, mode)
                pair = self._store.update(
                    pair,
                    state=PairState.PARKED,
                    gpu_instance_id=pair.gpu_instance_id if mode == "stop" else None,
                )
                self._store.record(pair.id, "parked", "finished by reconcile")
                repairs.append(Repair(pair.id, "park finished"))
            else:
                self._store.update(pair, state=PairState.READY)
                self._store.record(pair.id, "park-failed", "interrupted before the snapshot")
                repairs.append(Repair(pair.id, "park rolled back", "the GPU keeps running"))
        elif pair.state is PairState.RESUMING:
            if "resume-filled" in steps and gpu is not None and gpu.running:
                self._store.update(pair, state=PairState.READY)
                self._store.record(pair.id, "resumed", "finished by reconcile")
                repairs.append(Repair(pair.id, "resume finished", str(gpu.id)))
            else:
                retired = await self.roll_back_resume(pair, mode)
                repairs.append(Repair(pair.id, "resume rolled back", retired))
        standby = await self._standbys.find(pair.standby_name)
        if standby is None or standby.stopped:
            await self._ensure_standby(self._store.get(pair.id))
            action = "standby recreated" if standby is None else "standby started"
            repairs.append(Repair(pair.id, action))
        return repairs

    async def roll_back_resume(self, pair: Pair, mode: str) -> str:
        """Back to parked: the resumed GPU stopped again (stop mode) or every GPU of the resume's
        generation destroyed, including one rented but not yet stored."""
        retired: list[str] = []
        if mode == "stop" and pair.gpu_instance_id is not None:
            with contextlib.suppress(CloudNotFound):
                await self._vast.set_instance_state(pair.gpu_instance_id, "stopped")
                retired.append(f"{pair.gpu_instance_id} stopped")
            gpu_id: int | None = pair.gpu_instance_id
        else:
            found = await self._vast.list_instances(label_prefix=pair.gpu_label)
            for gpu in (g for g in found if g.label == pair.gpu_label):
                with contextlib.suppress(CloudNotFound):
                    await self._vast.destroy_instance(gpu.id)
                retired.append(f"{gpu.id} destroyed")
            gpu_id = None
        self._store.update(pair, state=PairState.PARKED, gpu_instance_id=gpu_id)
        self._store.record(pair.id, "resume-rolled-back", ", ".join(retired) or "no GPU")
        return ", ".join(retired) or "no GPU was rented"

    async def retire_gpu(self, pair: Pair, gpu: VastInstance, mode: str) -> None:
        """Park's last step: stop (the provider keeps the disk) or destroy the GPU."""
        self._progress(f"{'stopping' if mode == 'stop' else 'destroying'} GPU instance {gpu.id}")
        with contextlib.suppress(CloudNotFound):  # gone already: the goal is reached
            if mode == "stop":
                await self._vast.set_instance_state(gpu.id, "stopped")
            else:
                await self._vast.destroy_instance(gpu.id)
        kind = "gpu-stopped" if mode == "stop" else "gpu-destroyed"
        self._store.record(pair.id, kind, str(gpu.id))

    async def _gpu_gone(self, pair: Pair) -> bool:
        """Confirm with a second, direct question before deleting anything on a listing's word."""
        assert pair.gpu_instance_id is not None
        try:
            await self._vast.show_instance(pair.gpu_instance_id)
        except CloudNotFound:
            return True
        return False

    async def _reconcile_orphans(self, *, delete: bool) -> list[Repair]:
        live = {p.id for p in self._store.list()}
        repairs: list[Repair] = []
        for gpu in await self._vast.list_instances(label_prefix="dumont:"):
            match = _GPU_LABEL.match(gpu.label)
            if match and match.group(1) not in live:
                if delete:
                    await self._vast.destroy_instance(gpu.id)
                action = "orphan GPU destroyed" if delete else "orphan GPU found"
                repairs.append(Repair(match.group(1), action, str(gpu.id)))
        for vm in await self._standbys.list_by_label(PAIR_LABEL):
            owner = vm.labels.get(PAIR_LABEL, "")
            if owner not in live:
                if delete:
                    await self._standbys.delete(vm.name)
                action = "orphan standby deleted" if delete else "orphan standby found"
                repairs.append(Repair(owner, action, vm.name))
        return repairs
