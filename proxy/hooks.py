"""Runs the configured hook commands, keepalived-style: the event travels in DUMONT_* variables.

A hook runs in its own process group so that a timeout kills everything it started, not just the
shell. Its output is kept (bounded) for the log line that reports the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["HookOutcome", "hook_environment", "run_hook"]

log = logging.getLogger("dumont.hooks")
OUTPUT_LIMIT = 4096
KILL_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class HookOutcome:
    ok: bool
    detail: str
    seconds: float


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def hook_environment(event: Mapping[str, str]) -> dict[str, str]:
    """The proxy's environment without its own DUMONT_* settings, plus the event's variables.

    A hook's tools read DUMONT_* too (dumont-provision's DUMONT_STANDBY is an SSH address, the
    proxy's a URL): inheriting the proxy's settings would hand them the wrong meaning.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DUMONT_")}
    return {**inherited, **event}


async def run_hook(command: str, env: Mapping[str, str], timeout: float) -> HookOutcome:
    """Run ``command`` with the event's ``env``; never raises for the hook."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=hook_environment(env),
            start_new_session=True,
        )
    except OSError as exc:
        return HookOutcome(False, f"could not start: {exc}", time.monotonic() - started)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        return HookOutcome(False, f"timed out after {timeout:g}s", time.monotonic() - started)
    except asyncio.CancelledError:
        _kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    # The shell has exited; anything it left in its group must not outlive the hook.
    _kill_group(proc.pid, signal.SIGKILL)
    text = output.decode(errors="replace").strip()[-OUTPUT_LIMIT:]
    seconds = time.monotonic() - started
    if proc.returncode == 0:
        return HookOutcome(True, text or "exit 0", seconds)
    last = text.splitlines()[-1] if text else ""
    return HookOutcome(False, f"exit {proc.returncode}" + (f": {last}" if last else ""), seconds)
