"""Runs the proxy: both listeners, the workspace's background work, and a bounded shutdown.

On SIGTERM or SIGINT: stop accepting, close WebSockets with 1001, give in-flight requests
``shutdown_timeout`` seconds, then cancel and await every background task.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .config import Config, HostPort
from .control_app import make_control_app
from .errors import ConfigError
from .limits import GuardedAppRunner
from .public_app import make_public_app
from .startup_checks import check_startup
from .tls import TLSSite, add_hsts, server_context
from .workspace import Workspace

__all__ = ["ProxyServer", "install_event_loop_policy", "run"]

log = logging.getLogger("dumont.server")


def install_event_loop_policy() -> str:
    """uvloop when it imports (it is much faster at sockets), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


@dataclass
class Listener:
    runner: web.AppRunner
    site: web.TCPSite

    @property
    def address(self) -> HostPort:
        server = self.site._server
        assert isinstance(server, asyncio.base_events.Server | object)
        sockets = getattr(server, "sockets", None) or []
        host, port = sockets[0].getsockname()[:2]
        return HostPort(host, port)


class ProxyServer:
    def __init__(self, config: Config, workspace: Workspace | None = None) -> None:
        self.config = config
        self.workspace = workspace or Workspace(config)
        self.public: Listener | None = None
        self.control: Listener | None = None

    async def start(self) -> None:
        # Both apps first: they attach the workspace's observers (metrics count the very first
        # health checks), then the checks start, then the listeners open.
        public, control = make_public_app(self.workspace), make_control_app(self.workspace)
        self.workspace.start()
        # Control first: once the public /__dumont/healthz answers (what deploy scripts, the
        # container's HEALTHCHECK and the tests wait for), the admin API and metrics answer too.
        self.control = await self._listen(control, self.config.control_listen, False)
        self.public = await self._listen(public, self.config.listen, self.config.access_log, True)
        log.info(
            "serving on %s://%s (control on http://%s): primary %s, standby %s",
            "https" if self.config.tls.cert else "http",
            self.public.address,
            self.control.address,
            self.config.primary,
            self.config.standby,
        )

    async def _listen(
        self, app: web.Application, where: HostPort, access_log: bool, public: bool = False
    ) -> Listener:
        if public:
            add_hsts(app, self.config.tls)
        runner = GuardedAppRunner(  # issue 7: slow clients, limits, request screening
            app,
            limits=self.config.limits,
            access_log=logging.getLogger("aiohttp.access") if access_log else None,
            # The log line's own timestamp is the end; the duration dates the start.
            access_log_format='%a "%r" %s %b %Tfs "%{User-Agent}i"',
            shutdown_timeout=self.config.shutdown_timeout,
            handle_signals=False,
        )
        await runner.setup()
        ssl_context = server_context(self.config.tls) if public else None
        site = TLSSite(
            runner,
            where.host,
            where.port,
            backlog=1024,
            ssl_context=ssl_context,
            handshake_timeout=self.config.limits.header_timeout,
        )
        await site.start()
        return Listener(runner, site)

    async def stop(self) -> None:
        for listener in (self.public, self.control):
            if listener is not None:
                await listener.runner.cleanup()
        await self.workspace.close()
        log.info("stopped")


async def serve(config: Config, on_ready: Callable[[ProxyServer], None] | None = None) -> None:
    server = ProxyServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_ready is not None:
        on_ready(server)
    try:
        await stop.wait()
        log.info("shutting down (up to %gs for in-flight requests)", config.shutdown_timeout)
    finally:
        await server.stop()


def run(config: Config) -> int:
    try:
        check_startup(config)
    except ConfigError as exc:
        print(f"dumont-proxy: {exc}", file=sys.stderr)
        return 2
    loop_name = install_event_loop_policy()
    log.debug("event loop: %s", loop_name)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"dumont-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
