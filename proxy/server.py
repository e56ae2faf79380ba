"""Runs the proxy: the data plane's two listeners, the local aiohttp apps behind them, the
workspace's background work, and a bounded shutdown.

Composition, in order, before anything listens: the workspace, then the apps (pages and control:
they attach the workspace's observers, so metrics count the very first health checks), then the
health checks, then the listeners. Each app listens on a Unix socket in a private directory; the
data plane hands it its paths.

On SIGTERM or SIGINT: stop accepting, close WebSockets with 1001, give in-flight requests
``shutdown_timeout`` seconds, then cancel and await every background task.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import build_auth
from .compiled import BUILDS
from .config import Config, configured_workspaces
from .control_app import make_control_app
from .dashboard import Board
from .dataplane.handlers import LocalAppHandler, PublicHandler
from .dataplane.listener import Listener, ListenerContext
from .dataplane.upstream import UpstreamPool
from .errors import ConfigError
from .observe import TrafficObserver
from .pages import TipBook
from .park_actions import ParkActions
from .public_app import make_public_app
from .sites import Site, Sites
from .startup_checks import check_startup
from .tls import hsts_value, server_context
from .workspace import Workspace

if TYPE_CHECKING:
    from .auth.service import Auth
    from .cluster.member import ClusterMember

__all__ = ["ProxyServer", "install_event_loop_policy", "run"]

log = logging.getLogger("dumont.server")
# The local apps answer at once or stream; a connect that takes this long means they are gone.
LOCAL_CONNECT_TIMEOUT = 5.0


def install_event_loop_policy() -> str:
    """uvloop when it imports (it is much faster at sockets), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class LocalApp:
    """An aiohttp application on a Unix socket, and the pool the data plane reaches it with."""

    def __init__(self, app: web.Application, path: Path, shutdown_timeout: float) -> None:
        self.path = path
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self.pool = UpstreamPool(
            "localhost", 0, tls=False, connect_timeout=LOCAL_CONNECT_TIMEOUT, unix_path=str(path)
        )

    async def start(self) -> None:
        await self.runner.setup()
        await web.UnixSite(self.runner, str(self.path)).start()

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.pool.close()


class ProxyServer:
    """The composition root: every part is built here, in order, before anything listens:
    config -> the sites (each a workspace with its board, metrics, park actions and view) -> the
    apps -> the health checks -> the listeners.

    ``workspace``: the "default" workspace to serve (tests hand in one with a fake clock)."""

    def __init__(self, config: Config, workspace: Workspace | None = None) -> None:
        self.config = config
        self.tips = TipBook.for_config(config.pages)  # the transition page's A/B counts
        self.sites = Sites(
            config, configured_workspaces(config), self.tips, default_workspace=workspace
        )
        # Sign-in at the proxy (issue 17); None with auth.mode = "none": no gate at all.
        self.auth: Auth | None = build_auth(config, self.sites)
        if self.auth is not None:
            self.sites.process_metrics.append(self.auth.metrics.render)
        # Proxy replicas through etcd (issue 16); None without [cluster] endpoints: alone.
        self.cluster: ClusterMember | None = None
        self.public: Listener | None = None
        self.control: Listener | None = None
        self._apps: list[LocalApp] = []
        self._runtime: Path | None = None

    # The "default" workspace's parts, for the tests and tools written when there was one.
    @property
    def site(self) -> Site:
        return self.sites.get("default")

    @property
    def workspace(self) -> Workspace:
        return self.site.workspace

    @property
    def board(self) -> Board:
        return self.site.board

    @property
    def park(self) -> ParkActions:
        return self.site.park

    @property
    def traffic(self) -> TrafficObserver:
        return self.site.traffic

    async def start(self) -> None:
        config = self.config
        self._runtime = Path(tempfile.mkdtemp(prefix="dumont-"))  # 0700: ours alone
        grace = config.shutdown_timeout
        if config.cluster.enabled:
            # Imported here: a proxy that runs alone loads none of it.
            from .cluster.member import ClusterMember

            self.cluster = ClusterMember(config, self.sites)
            self.sites.process_metrics.append(self.cluster.metrics.render)
            if self.auth is not None:  # a sign-out on one replica ends the session on all
                self.cluster.share_sessions(self.auth.sign_in.sessions)
        pages_app = make_public_app(self.sites, self.tips, self.auth)
        pages = LocalApp(pages_app, self._runtime / "pages.sock", grace)
        control_app = make_control_app(self.sites, cluster=self.cluster)
        if self.cluster is not None and self.auth is not None:
            from .auth.admin import ADMIN_ROOT
            from .cluster.routes import add_cluster_routes

            # After the admins' guard (already installed): checked there, then forwarded.
            add_cluster_routes(self.auth.admin, self.cluster, root=ADMIN_ROOT)
        control = LocalApp(control_app, self._runtime / "control.sock", grace)
        self._apps = [pages, control]
        for app in self._apps:
            await app.start()
        self.sites.start()
        hsts = hsts_value(config.tls)
        self.control = Listener(
            ListenerContext(config.limits, LocalAppHandler(control.pool)),
            config.control_listen,
            None,
        )
        ssl_context = server_context(config.tls, http2=config.http2.enabled)
        # Control first: once the public /__dumont/healthz answers (what deploy scripts, the
        # container's HEALTHCHECK and the tests wait for), the admin API and metrics answer too.
        await self.control.start()
        if self.cluster is not None:
            # Joined (the workspaces and decisions read) before the public listener opens; a
            # store that does not answer yet leaves every workspace answering 503 until it does.
            if config.cluster.advertise is None:
                self.cluster.advertise = f"http://{self.control.address}"
            await self.cluster.start(wait=config.cluster.lease_ttl)
        self.public = Listener(
            ListenerContext(
                config.limits,
                PublicHandler(
                    self.sites,
                    config,
                    pages.pool,
                    hsts,
                    gate=None if self.auth is None else self.auth.gate,
                ),
                tls=ssl_context is not None,
                access_log=config.access_log,
                hsts=hsts,
                http2=config.http2 if ssl_context is not None and config.http2.enabled else None,
            ),
            config.listen,
            ssl_context,
        )
        await self.public.start()
        self.sites.process_metrics.append(self.public.context.protocols.render)
        log.info(
            "serving on %s://%s (control on http://%s): %s",
            "https" if ssl_context else "http",
            self.public.address,
            self.control.address,
            "; ".join(
                f"{site.name} ({', '.join(site.spec.hosts)}): primary {site.spec.primary},"
                f" standby {site.spec.standby}"
                for site in self.sites
            )
            or "no workspace yet (add one with PUT /admin/workspaces/NAME)",
        )
        for build in BUILDS.values():
            log.info("%s", build.describe())

    async def stop(self) -> None:
        listeners = [x for x in (self.public, self.control) if x is not None]
        for listener in listeners:
            listener.stop_accepting()
        if self.cluster is not None:  # first: another replica takes over at once, not a TTL on
            await self.cluster.stop()
        # 1001 tells browsers the proxy is going away; the apps end their event streams.
        await self.sites.close_websockets()
        grace = self.config.shutdown_timeout
        await asyncio.gather(
            *(listener.stop(grace) for listener in listeners),
            *(app.stop() for app in self._apps),
        )
        await self.sites.close()
        if self.auth is not None:
            await self.auth.close()
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
        log.info("stopped")


async def serve(config: Config, on_ready: Callable[[ProxyServer], None] | None = None) -> None:
    server = ProxyServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # Everything built so far lives as long as the process (a thousand workspaces' machines,
    # boards, metrics): out of the collector's sight, its full passes stop walking them.
    gc.freeze()
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
    except ConfigError as exc:  # the state directory, read as the sites are built
        print(f"dumont-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dumont-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
