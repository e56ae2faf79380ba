"""What a user or an operator may ask of a parked (or about to be parked) GPU: keep it, or bring it
back. The control API (``POST /admin/park/keep``, ``POST /admin/resume``) and the IDE's buttons
(``POST /__dumont/park/keep``, ``POST /__dumont/resume``) both go through here, so the rules and
the one resume at a time are the same whoever clicks.
"""

from __future__ import annotations

import logging

from .errors import Conflict
from .hooks import run_hook
from .park_status import ParkStatus
from .tasks import TaskSet
from .workspace import Workspace

__all__ = ["ParkActions"]

log = logging.getLogger("dumont.park")


class ParkActions:
    def __init__(self, workspace: Workspace, park: ParkStatus) -> None:
        self.workspace = workspace
        self.park = park
        self.tasks = TaskSet("park")

    def keep(self) -> None:
        """The user's "Keep it": no park before park_after from now; Conflict if nothing to keep."""
        self.park.keep()

    def resume(self) -> None:
        """Start hooks.resume (``pair resume``) in the background; it reports its progress with
        ``PUT /admin/park``. Conflict when there is nothing to resume or one already runs."""
        command = self.workspace.config.hooks.resume
        park = self.park
        if command is None:
            raise Conflict("no resume hook configured ([hooks] resume)")
        if park.phase not in ("parked", "resume_failed"):
            raise Conflict(f"nothing to resume: the GPU is {park.phase}")
        if len(self.tasks):
            raise Conflict("a resume is already running")
        renting = {"phase": "resuming", "detail": "renting a GPU", "step": "renting"}
        park.report(renting | {"standby": park.standby})
        env = {
            "DUMONT_WORKSPACE": self.workspace.name,
            "DUMONT_EVENT": "resume",
            "DUMONT_REASON": "resume: requested",
        }
        self.tasks.spawn(self._run(command, env), name="resume")

    async def _run(self, command: str, env: dict[str, str]) -> None:
        outcome = await run_hook(command, env, self.workspace.config.hooks.timeout)
        log.log(
            logging.INFO if outcome.ok else logging.ERROR,
            "hook resume %s in %.1fs: %s",
            "ok" if outcome.ok else "failed",
            outcome.seconds,
            outcome.detail.splitlines()[-1] if outcome.detail else "",
            extra={"fields": {"event": "hook_finished", "hook": "resume", "ok": outcome.ok}},
        )
        park = self.park
        if not outcome.ok and park.phase == "resuming":
            # The hook died before it could report (killed, timed out): the user must not wait on.
            failed = {"phase": "resume_failed", "detail": outcome.detail, "standby": park.standby}
            park.report(failed)

    async def close(self) -> None:
        await self.tasks.close()
