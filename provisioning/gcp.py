"""The CPU standby VM on Google Cloud, through google-cloud-compute's REST transport.

A standby is an e2-medium SPOT instance (termination action STOP by default, so a preemption
keeps its disk and ``start`` brings it back), named and labelled from its pair id so a retried
create finds what the first attempt made (insert answers 409 and we adopt the existing VM).

Operations are waited for with our own ZoneOperationsClient built from the same ``client_options``:
the library's ExtendedOperation polls through a client it builds internally *without* our
``api_endpoint``, which would send test traffic to the real API. The ``*_unary`` calls give us the
raw Operation instead.

A spot VM is told of its preemption about 30 s before it stops: its metadata value ``preempted``
turns TRUE. The start-up script's watcher (provisioning.startup_script) writes each value it sees
to the guest attribute ``dumont/preempted``, which ``preempted()`` reads through the Compute API:
the standby's loss is known while the instance still says RUNNING.

Credentials come from ``GOOGLE_APPLICATION_CREDENTIALS`` (application default credentials) or an
explicit service-account file; they are never printed or logged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import compute_v1

from provisioning.errors import (
    CloudAuthError,
    CloudError,
    CloudNotFound,
    CloudQuotaError,
    CloudTransientError,
    UsageError,
)
from provisioning.retry import RetryPolicy

__all__ = ["StandbySpec", "StandbyVm", "StandbyVms", "load_credentials", "validate_zone"]

T = TypeVar("T")

_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.RetryError,
)
_DONE = compute_v1.Operation.Status.DONE
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GUEST_NAMESPACE = "dumont"  # the guest attributes the standby's start-up script writes


def validate_zone(zone: str) -> str:
    if not _ZONE.match(zone):
        raise UsageError(f"bad zone {zone!r}: expected a Compute Engine zone like us-central1-a")
    return zone


def load_credentials(path: str | None, *, anonymous: bool = False) -> Credentials:
    """Service-account file if given, else application default credentials."""
    if anonymous:
        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    import google.auth
    from google.oauth2 import service_account

    try:
        if path:
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call,no-any-return]
                path, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return credentials
    except (OSError, ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        # The message names the file or the lookup, never the key material.
        where = path or "GOOGLE_APPLICATION_CREDENTIALS / application default credentials"
        raise UsageError(f"no usable Google Cloud credentials from {where}") from exc


@dataclass(frozen=True)
class StandbySpec:
    name: str
    labels: Mapping[str, str]
    startup_script: str
    ssh_user: str
    ssh_public_key: str
    machine_type: str = "e2-medium"
    source_image: str = "projects/debian-cloud/global/images/family/debian-12"
    disk_gb: int = 30
    termination_action: str = "STOP"  # or DELETE
    network: str = "global/networks/default"

    def __post_init__(self) -> None:
        for key, value in self.labels.items():
            if not _LABEL.match(key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise UsageError(f"bad label {key}={value!r}: lowercase letters, digits, - and _")
        if self.termination_action not in ("STOP", "DELETE"):
            raise UsageError(f"bad termination action {self.termination_action!r}: STOP or DELETE")


@dataclass(frozen=True)
class StandbyVm:
    name: str
    status: str  # PROVISIONING, STAGING, RUNNING, STOPPING, TERMINATED, ...
    labels: Mapping[str, str]
    external_ip: str
    raw: compute_v1.Instance = field(repr=False, compare=False)

    @property
    def stopped(self) -> bool:
        return self.status in ("TERMINATED", "STOPPED", "SUSPENDED")

    @classmethod
    def from_proto(cls, vm: compute_v1.Instance) -> StandbyVm:
        ip = ""
        for nic in vm.network_interfaces:
            for access in nic.access_configs:
                ip = ip or access.nat_i_p
        return cls(name=vm.name, status=vm.status, labels=dict(vm.labels), external_ip=ip, raw=vm)


class StandbyVms:
    """Create, find, start and delete standby VMs in one project and zone."""

    def __init__(
        self,
        project: str,
        zone: str,
        *,
        credentials: Credentials,
        api_endpoint: str | None = None,
        timeout: float = 60.0,
        operation_timeout: float = 600.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not project:
            raise UsageError("missing Google Cloud project: pass --gcp-project")
        self.project = project
        self.zone = validate_zone(zone)
        options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        self._instances = compute_v1.InstancesClient(
            credentials=credentials, transport="rest", client_options=options
        )
        self._operations = compute_v1.ZoneOperationsClient(
            credentials=credentials, transport="rest", client_options=options
        )
        self._timeout = timeout
        self._operation_timeout = operation_timeout
        self._retry = retry or RetryPolicy()

    async def create(self, spec: StandbySpec) -> StandbyVm:
        """Insert the VM and wait for it; adopts an existing VM of the same name."""
        try:
            operation = await self._call(
                self._instances.insert_unary,
                project=self.project,
                zone=self.zone,
                instance_resource=_instance_resource(spec, self.zone),
            )
        except CloudError as exc:
            if exc.status != 409:
                raise
        else:
            await self.wait(operation.name)
        return await self.get(spec.name)

    async def get(self, name: str) -> StandbyVm:
        vm = await self._call(
            self._instances.get, project=self.project, zone=self.zone, instance=name
        )
        return StandbyVm.from_proto(vm)

    async def find(self, name: str) -> StandbyVm | None:
        try:
            return await self.get(name)
        except CloudNotFound:
            return None

    async def list_by_label(self, key: str, value: str | None = None) -> list[StandbyVm]:
        expression = f'labels.{key} = "{value}"' if value is not None else f"labels.{key}:*"
        request = compute_v1.ListInstancesRequest(
            project=self.project, zone=self.zone, filter=expression
        )

        def list_all() -> list[compute_v1.Instance]:
            return list(self._instances.list(request=request, timeout=self._timeout))

        return [StandbyVm.from_proto(vm) for vm in await self._retrying(list_all)]

    async def preempted(self, name: str) -> bool:
        """Whether the VM's own watcher reported GCE's preemption notice (guest attribute
        ``dumont/preempted`` = TRUE); False before it has written anything."""
        request = compute_v1.GetGuestAttributesInstanceRequest(
            project=self.project, zone=self.zone, instance=name, query_path=f"{GUEST_NAMESPACE}/"
        )
        try:
            found = await self._call(self._instances.get_guest_attributes, request=request)
        except CloudNotFound:
            return False
        return any(
            item.key == "preempted" and item.value.strip().upper() == "TRUE"
            for item in found.query_value.items
        )

    async def start(self, name: str) -> None:
        operation = await self._call(
            self._instances.start_unary, project=self.project, zone=self.zone, instance=name
        )
        await self.wait(operation.name)

    async def delete(self, name: str) -> bool:
        """Delete the VM; False when it was already gone."""
        try:
            operation = await self._call(
                self._instances.delete_unary, project=self.project, zone=self.zone, instance=name
            )
        except CloudNotFound:
            return False
        await self.wait(operation.name)
        return True

    async def wait(self, operation: str) -> None:
        """Block until a zonal operation is DONE; raise its error if it failed."""
        deadline = time.monotonic() + self._operation_timeout
        while True:
            # operations.wait returns after at most ~2 minutes or when DONE, whichever first.
            result = await self._call(
                self._operations.wait, project=self.project, zone=self.zone, operation=operation
            )
            if result.status == _DONE:
                break
            if time.monotonic() > deadline:
                raise CloudTransientError(f"gcp: operation {operation} still not done")
            await asyncio.sleep(1.0)
        if result.error and result.error.errors:
            first = result.error.errors[0]
            message = f"gcp: operation {operation} failed: {first.code}: {first.message}"
            if "QUOTA" in first.code or "STOCKOUT" in first.code:
                raise CloudQuotaError(message)
            raise CloudError(message, status=result.http_error_status_code or None)

    async def _call(self, method: Callable[..., T], **kwargs: Any) -> T:
        return await self._retrying(lambda: method(**kwargs, timeout=self._timeout))

    async def _retrying(self, call: Callable[[], T]) -> T:
        for attempt in range(self._retry.attempts):
            if attempt:
                await asyncio.sleep(self._retry.delay(attempt))
            try:
                return await asyncio.to_thread(call)
            except _TRANSIENT as exc:
                last: BaseException = exc
            except gexc.GoogleAPICallError as exc:
                raise _translate(exc) from exc
            except Exception as exc:
                # requests' connection errors and timeouts come unwrapped from the REST transport.
                if type(exc).__module__.startswith(("requests", "urllib3", "google.auth")):
                    last = exc
                    continue
                raise
        raise CloudTransientError(f"gcp: still failing after retries: {_describe(last)}") from last


def _describe(exc: BaseException) -> str:
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"HTTP {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _translate(exc: gexc.GoogleAPICallError) -> CloudError:
    status = int(exc.code) if exc.code is not None else None
    message = f"gcp: HTTP {status}: {exc.message}"
    reasons = " ".join(str(e) for e in (exc.errors or [])) + " " + str(exc.message)
    if "quota" in reasons.lower() or "QUOTA_EXCEEDED" in reasons:
        return CloudQuotaError(message, status=status)
    if isinstance(exc, gexc.Unauthenticated | gexc.PermissionDenied):
        return CloudAuthError(message, status=status)
    if isinstance(exc, gexc.NotFound):
        return CloudNotFound(message, status=status)
    return CloudError(message, status=status)


def _instance_resource(spec: StandbySpec, zone: str) -> compute_v1.Instance:
    return compute_v1.Instance(
        name=spec.name,
        machine_type=f"zones/{zone}/machineTypes/{spec.machine_type}",
        labels=dict(spec.labels),
        scheduling=compute_v1.Scheduling(
            provisioning_model="SPOT",
            instance_termination_action=spec.termination_action,
            automatic_restart=False,
            on_host_maintenance="TERMINATE",
        ),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=spec.source_image, disk_size_gb=spec.disk_gb
                ),
            )
        ],
        network_interfaces=[
            compute_v1.NetworkInterface(
                network=spec.network,
                access_configs=[
                    compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")
                ],
            )
        ],
        metadata=compute_v1.Metadata(
            items=[
                compute_v1.Items(key="startup-script", value=spec.startup_script),
                compute_v1.Items(key="ssh-keys", value=f"{spec.ssh_user}:{spec.ssh_public_key}"),
                # The preemption watcher reports through guest attributes, off by default.
                compute_v1.Items(key="enable-guest-attributes", value="TRUE"),
            ]
        ),
    )
