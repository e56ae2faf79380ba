"""The provisioning package's exception tree.

ProvisioningError            root: every error this package raises on purpose
  (modules add their subclasses here, each naming what went wrong in one line)

The CLI prints ``str(exc)`` of a ProvisioningError as one line and exits non-zero; anything else is a
bug and gets a traceback.
"""

from __future__ import annotations

__all__ = ["ProvisioningError"]


class ProvisioningError(Exception):
    """Root of every error the provisioning package raises on purpose."""
