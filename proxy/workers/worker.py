"""A worker process: the data plane on the public port, routing by the controller's decisions.

Started by the controller (proxy.workers.pool) as ``python -m proxy.workers.worker --fd N`` with
one end of a socketpair inherited; the first frame carries the configuration and the pages app's
socket. The worker ignores SIGTERM and SIGINT: the controller tells it when to stop (and a
controller that is gone closes the channel, which stops it too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from proxy.dataplane.handlers import PublicHandler
from proxy.dataplane.listener import Listener, ListenerContext
from proxy.dataplane.upstream import UpstreamPool
from proxy.logs import setup_logging
from proxy.server import LOCAL_CONNECT_TIMEOUT, install_event_loop_policy
from proxy.tasks import TaskSet
from proxy.tls import hsts_value, server_context
from proxy.workspace import CLOSE_SHUTDOWN

from .channel import read_frame, write_frame
from .decisions import RemoteRouter, RouteDecision, TrafficBatch

__all__ = ["main"]

log = logging.getLogger("dumont.worker")
# How often a worker sends what the metrics count: the controller's /metrics lags by this much.
TRAFFIC_FLUSH = 0.2


async def _flush_traffic(traffic: TrafficBatch, writer: asyncio.StreamWriter) -> None:
    while True:
        await asyncio.sleep(TRAFFIC_FLUSH)
        if entries := traffic.take():
            write_frame(writer, ("traffic", entries))


async def serve(fd: int) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None)
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    first = await read_frame(reader)
    if first is None or first[0] != "start":
        return 2
    _, config, pages_path, index = first
    setup_logging(config.log_format, config.log_level)
    tasks = TaskSet(f"worker-{index}")
    router = RemoteRouter(config, lambda message: write_frame(writer, message), tasks)
    traffic = TrafficBatch()  # sent to the controller, whose metrics count it
    pages = UpstreamPool(
        "localhost", 0, tls=False, connect_timeout=LOCAL_CONNECT_TIMEOUT, unix_path=pages_path
    )
    hsts = hsts_value(config.tls)
    ssl_context = server_context(config.tls)
    context = ListenerContext(
        config.limits,
        PublicHandler(router, traffic, config, pages, hsts),
        tls=ssl_context is not None,
        access_log=config.access_log,
        hsts=hsts,
    )
    listener = Listener(context, config.listen, ssl_context, reuse_port=True)
    await listener.start()
    write_frame(writer, ("ready", os.getpid()))
    tasks.spawn(_flush_traffic(traffic, writer), name="traffic")
    while (message := await read_frame(reader)) is not None:
        if message[0] == "decision" and isinstance(message[1], RouteDecision):
            router.apply(message[1])
        elif message[0] == "stop":
            break
    listener.stop_accepting()
    for backend in router.backends.values():
        await backend.close_websockets(CLOSE_SHUTDOWN, b"proxy shutting down")
    await listener.stop(config.shutdown_timeout)
    if entries := traffic.take():
        write_frame(writer, ("traffic", entries))
    await tasks.close()
    await router.close()
    pages.close()
    writer.close()
    return 0


def main(argv: list[str]) -> int:
    fd = int(argv[argv.index("--fd") + 1])
    install_event_loop_policy()
    return asyncio.run(serve(fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
