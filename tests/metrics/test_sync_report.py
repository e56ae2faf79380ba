"""The sync states on both ends of ``PUT /admin/sync`` are one list: provisioning sends what the
proxy accepts (the proxy cannot import provisioning, so each spells them; this holds them equal)."""

from __future__ import annotations

from typing import get_args

from provisioning.proxy_admin import SyncState
from proxy.sync_report import SYNC_STATES


def test_the_proxy_accepts_exactly_the_states_provisioning_reports() -> None:
    assert SYNC_STATES[0] == "unknown"  # the proxy's own: no report yet
    assert SYNC_STATES[1:] == get_args(SyncState)
