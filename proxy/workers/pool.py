"""The controller's side of the workers: start them, send each decision, take their reports,
replace one that died, stop them all."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config import Config
from proxy.failover import Decision, Event
from proxy.observe import TrafficObserver
from proxy.tasks import TaskSet
from proxy.workspace import Workspace

from .channel import read_frame, write_frame
from .decisions import RouteDecision, decision_of, replay_traffic

__all__ = ["WorkerPool"]

log = logging.getLogger("dumont.workers")
READY_TIMEOUT = 30.0


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerPool:
    def __init__(
        self, config: Config, workspace: Workspace, traffic: TrafficObserver, pages_path: Path
    ) -> None:
        self.config = config
        self.workspace = workspace
        self.traffic = traffic  # the workers' counts are replayed on it
        self.pages_path = pages_path
        self.workers: dict[int, _Worker] = {}
        self.tasks = TaskSet("workers")
        self._last: RouteDecision | None = None
        self._stopping = False

    async def start(self) -> None:
        for index in range(self.config.workers):
            await self._spawn(index)
        for worker in list(self.workers.values()):
            await asyncio.wait_for(worker.ready.wait(), READY_TIMEOUT)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "proxy.workers.worker",
                "--fd",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = _Worker(index, process, writer, reader)
        self.workers[index] = worker
        write_frame(writer, ("start", self.config, str(self.pages_path), index))
        write_frame(writer, ("decision", self._last or decision_of(self.workspace)))
        self.tasks.spawn(self._serve(worker), name=f"worker-{index}")

    async def _serve(self, worker: _Worker) -> None:
        workspace = self.workspace
        while (message := await read_frame(worker.reader)) is not None:
            kind = message[0]
            if kind == "traffic":
                replay_traffic(message[1], self.traffic)
            elif kind == "passive":
                workspace.report_passive_failure(workspace.backends[message[1]], message[2])
            elif kind == "ready":
                worker.ready.set()
                log.info("worker %d serving (pid %d)", worker.index, message[1])
        code = await worker.process.wait()
        worker.writer.close()
        if self._stopping or self.workers.get(worker.index) is not worker:
            return
        # Its connections died with it; the other workers' were never touched.
        log.error(
            "worker %d (pid %d) exited with %s; starting another",
            worker.index,
            worker.process.pid,
            code,
            extra={"fields": {"event": "worker_died", "worker": worker.index, "code": code}},
        )
        await self._spawn(worker.index)

    def observe(self, _: Event | Decision) -> None:
        """A workspace observer: every worker gets a decision that changed, in this very turn."""
        decision = decision_of(self.workspace)
        if decision == self._last:
            return
        self._last = decision
        for worker in self.workers.values():
            write_frame(worker.writer, ("decision", decision))

    async def stop(self, grace: float) -> None:
        self._stopping = True
        for worker in self.workers.values():
            if not worker.writer.is_closing():
                write_frame(worker.writer, ("stop",))
        for worker in self.workers.values():
            try:
                await asyncio.wait_for(worker.process.wait(), grace + 5)
            except TimeoutError:
                log.warning("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                await worker.process.wait()
        await self.tasks.close()
