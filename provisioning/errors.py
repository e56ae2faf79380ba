"""The provisioning package's exception tree, with each branch's exit status.

ProvisioningError            root: every error this package raises on purpose              exit 2
├── UsageError               bad input: a missing key, a bad zone, a malformed flag or file
├── StateConflict            the pair's state forbids this now (create twice, resume  exit 3
│   │                        a pair that is not parked): right command, wrong moment
│   └── StaleFencingToken    the standby has seen a newer fencing token (issue 16): a
│                            deposed proxy leader's hook, refused
├── StoreError               the pair store cannot be read or written
│   └── PairNotFound         no pair with that id
├── CloudError               a cloud API refused or failed; the API's own message is kept
│   ├── CloudAuthError       401/403: bad or missing credentials
│   ├── CloudNotFound        404: the instance or offer does not exist
│   ├── CloudQuotaError      quota, balance or capacity refused the request
│   └── CloudTransientError  429/5xx/connection errors still failing after every retry
├── NoOfferError             no GPU offer matches the search
├── SyncError                the file sync between GPU and standby failed
│   ├── RemoteCommandError   a command run over SSH exited non-zero (stderr kept)
│   ├── FenceError           the standby could not be fenced against the old primary
│   ├── ReverseSyncError     the standby's files did not arrive on the primary intact
│   └── SnapshotAgentError   the snapshot engine could not be installed or run on a machine
├── ProxyAdminError          the proxy's admin API refused a request
├── ParkRefused              a park or switchover's precondition is unmet; nothing was
│                            touched (defined in provisioning.parking)
└── SnapshotError            the snapshot engine's own tree (provisioning.snapshot.errors)

The CLIs (provisioning.cli, and ``python -m provisioning.snapshot`` on a GPU) are the one boundary:
they print ``str(exc)`` of a ProvisioningError as one line and exit with its ``exit_status``;
anything else is a bug and gets a traceback. A hook or script can therefore tell "try again later
or reconcile" (3) from "fix the command" (2). This module imports nothing of the package: the
snapshot agent's archive carries it alone.
"""

from __future__ import annotations

__all__ = [
    "CloudAuthError",
    "CloudError",
    "CloudNotFound",
    "CloudQuotaError",
    "CloudTransientError",
    "FenceError",
    "NoOfferError",
    "PairNotFound",
    "ProvisioningError",
    "ProxyAdminError",
    "RemoteCommandError",
    "ReverseSyncError",
    "SnapshotAgentError",
    "StaleFencingToken",
    "StateConflict",
    "StoreError",
    "SyncError",
    "UsageError",
]


class ProvisioningError(Exception):
    """Root of every error the provisioning package raises on purpose."""

    exit_status: int = 2  # what the CLI exits with; argparse's own usage errors exit 2 too


class UsageError(ProvisioningError):
    """Bad input from the user: a flag, an environment variable or a config file."""


class StateConflict(ProvisioningError):
    """The command is well formed, but the pair's state forbids it now (creating a pair that
    exists in another state, resuming one that is not parked). Nothing was changed."""

    exit_status = 3


class StaleFencingToken(StateConflict):
    """A proxy leader's hook carried a fencing token lower than the highest the standby has
    recorded: a newer leader's decision was acted on there, so this one is refused."""

    def __init__(self, message: str, *, token: int, seen: int) -> None:
        super().__init__(message)
        self.token = token
        self.seen = seen


class StoreError(ProvisioningError):
    """The SQLite pair store cannot be opened, read or written."""


class PairNotFound(StoreError):
    """No pair with the requested id exists in the store."""


class CloudError(ProvisioningError):
    """A cloud API call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CloudAuthError(CloudError):
    """The cloud rejected the credentials (401/403)."""


class CloudNotFound(CloudError):
    """The instance, offer or operation does not exist (404)."""


class CloudQuotaError(CloudError):
    """Quota, balance or capacity refused the request."""


class CloudTransientError(CloudError):
    """Rate limits, server errors or connection failures outlasted every retry."""


class NoOfferError(ProvisioningError):
    """No Vast.ai offer matches the requested GPU search."""


class SyncError(ProvisioningError):
    """The lsyncd-based sync between a GPU and its standby failed."""


class RemoteCommandError(SyncError):
    """A command run over SSH exited non-zero."""

    def __init__(self, message: str, *, returncode: int, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class FenceError(SyncError):
    """The standby could not be made to refuse writes from the old primary."""


class ReverseSyncError(SyncError):
    """Copying the standby's files back to the primary failed or did not verify."""


class SnapshotAgentError(SyncError):
    """The snapshot engine could not be installed or run on the remote host."""


class ProxyAdminError(ProvisioningError):
    """The proxy's admin API refused or could not be reached; ``status`` is the HTTP status
    when there was an answer (None: unreachable)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
