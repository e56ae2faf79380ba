"""The provisioning package's exception tree.

ProvisioningError            root: every error this package raises on purpose
├── ConfigError              bad input: a missing key, a bad zone, a malformed flag or file
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
│   └── ReverseSyncError     the standby's files did not arrive on the primary intact
└── ProxyAdminError          the proxy's admin API refused a request

The CLI prints ``str(exc)`` of a ProvisioningError as one line and exits non-zero; anything
else is a bug and gets a traceback.
"""

from __future__ import annotations

__all__ = [
    "CloudAuthError",
    "CloudError",
    "CloudNotFound",
    "CloudQuotaError",
    "CloudTransientError",
    "ConfigError",
    "FenceError",
    "NoOfferError",
    "PairNotFound",
    "ProvisioningError",
    "ProxyAdminError",
    "RemoteCommandError",
    "ReverseSyncError",
    "StoreError",
    "SyncError",
]


class ProvisioningError(Exception):
    """Root of every error the provisioning package raises on purpose."""


class ConfigError(ProvisioningError):
    """Bad input from the user: a flag, an environment variable or a config file."""


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


class ProxyAdminError(ProvisioningError):
    """The proxy's admin API refused or could not be reached."""
