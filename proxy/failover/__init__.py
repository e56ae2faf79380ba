"""The failover core: a pure state machine, tested with a fake clock, that does no I/O.

    events.py     what the machine is told (health results, failing and served requests,
                  commands, hook results, ticks), the roles, and ``Cause``: why things happen
    decisions.py  what it decides (route, probe, run a hook) and reports (health changes,
                  switches, the first request served after a switch), each with its cause
    machine.py    ``FailoverMachine``: the states, the hysteresis and the switches (its docstring
                  draws them)

proxy.workspace feeds it and carries its decisions out; nothing here imports anything that does
I/O. Every name is re-exported here: import from ``proxy.failover``.
"""

from .decisions import (
    Activate,
    CommandRefused,
    Decision,
    FirstRequestServed,
    HealthChanged,
    ProbeNow,
    RunHook,
    SwitchFinished,
    SwitchKind,
    SwitchRecord,
    SwitchStarted,
)
from .events import (
    COMMANDED,
    ROLES,
    AdminFailback,
    AdminFailover,
    Adopt,
    BackendReplaced,
    Cause,
    CheckResult,
    Event,
    HookFinished,
    HookName,
    PassiveFailure,
    PeerViews,
    RequestServed,
    Role,
    Tick,
    other,
)
from .machine import SERVING, BackendHealth, FailoverMachine, Policy, State

__all__ = [
    "COMMANDED",
    "ROLES",
    "SERVING",
    "Activate",
    "AdminFailback",
    "AdminFailover",
    "Adopt",
    "BackendHealth",
    "BackendReplaced",
    "Cause",
    "CheckResult",
    "CommandRefused",
    "Decision",
    "Event",
    "FailoverMachine",
    "FirstRequestServed",
    "HealthChanged",
    "HookFinished",
    "HookName",
    "PassiveFailure",
    "PeerViews",
    "Policy",
    "ProbeNow",
    "RequestServed",
    "Role",
    "RunHook",
    "State",
    "SwitchFinished",
    "SwitchKind",
    "SwitchRecord",
    "SwitchStarted",
    "Tick",
    "other",
]
