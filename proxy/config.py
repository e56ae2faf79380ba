"""Typed configuration, layered: defaults < TOML file < DUMONT_* environment < command-line flags.

Every setting is declared once, as a field of the dataclasses below (proxy.settings); the TOML
key, the environment variable, the flag and its ``--help`` line, default included, all come from
that one declaration, so they cannot drift apart. A bad value stops start-up with one
``ConfigError`` line naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from yarl import URL

from proxy.settings import (
    Entry,
    Schema,
    amount,
    boolean,
    command_parser,
    count,
    optional_text,
    positive_seconds,
    seconds,
    setting,
    table,
    text,
)
from proxy.settings import SettingError as _SettingError

from .auth.config import AuthConfig, check_auth
from .cluster.settings import ClusterConfig
from .errors import ConfigError
from .failover import Policy
from .pages.config import PagesConfig
from .workspaces.hosts import HostTable
from .workspaces.spec import CATCH_ALL, WorkspaceSpec, backend_url, check_name, parse_workspace

__all__ = [
    "PROXY",
    "SETTINGS",
    "Config",
    "Entry",
    "HealthConfig",
    "HooksConfig",
    "HostPort",
    "Http2Config",
    "LimitsConfig",
    "PricesConfig",
    "TLSConfig",
    "add_arguments",
    "configured_workspaces",
    "load_config",
    "parse_args",
    "parse_backend_url",
    "parse_host_port",
    "workspace_config",
    "workspace_setting",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The source tree holds templates/ and static/ beside the package; an installed image sets
# DUMONT_ASSETS_DIR (see Dockerfile).
DEFAULT_ASSETS = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# ------------------------------------------------------------------------------------ parsers


def parse_backend_url(key: str, raw: Any) -> URL:
    """A backend's URL, as a setting and as the control API's PUT /admin/backends/ takes it."""
    try:
        return backend_url(key, raw)
    except _SettingError as exc:
        raise ConfigError(exc.key, exc.problem) from None


def parse_host_port(key: str, raw: Any) -> HostPort:
    value = text(key, raw).strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise _SettingError(key, f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise _SettingError(key, f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise _SettingError(key, f"port must be 0-65535, got {port}")
    return HostPort(host, port)


def _assets(key: str, raw: Any) -> Path:
    path = Path(text(key, raw)).expanduser()
    missing = [d for d in ("templates", "static") if not (path / d).is_dir()]
    if missing:
        raise _SettingError(key, f"{path} has no {' or '.join(missing)} directory")
    return path


def _networks(key: str, raw: Any) -> tuple[IPNetwork, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise _SettingError(key, f"expected a list of addresses or CIDR networks, got {raw!r}")
    nets: list[IPNetwork] = []
    for item in items:
        value = text(key, item).strip()
        if not value:
            continue
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise _SettingError(key, f"not an address or CIDR network: {value!r}") from None
    return tuple(nets)


def _directory(key: str, raw: Any) -> Path | None:
    value = optional_text(key, raw)
    return None if value is None else Path(value).expanduser()


def workspace_setting(key: str, raw: Any) -> Any:
    """One workspace override, parsed as the proxy's own setting of that key."""
    return PROXY.entry(key).spec.parse(key, raw)


def _workspaces(key: str, raw: Any) -> tuple[WorkspaceSpec, ...]:
    if not isinstance(raw, Mapping):
        raise _SettingError(key, "expected [workspaces.NAME] tables")
    return tuple(
        parse_workspace(name, table, workspace_setting, where=key) for name, table in raw.items()
    )


# ----------------------------------------------------------------------------------- settings


def _seconds(default: float, help: str, *, positive: bool = True, **spec: Any) -> Any:
    parse = positive_seconds if positive else seconds
    return setting(default, help=help, parse=parse, metavar="S", **spec)


def _command(help: str) -> Any:
    return setting(None, help=help, parse=optional_text, metavar="CMD")


def _flag(default: bool, help: str) -> Any:
    return setting(default, help=help, parse=boolean, metavar="BOOL")


def _price(default: float | None, help: str, metavar: str = "USD") -> Any:
    return setting(default, help=help, parse=amount, metavar=metavar)


@dataclass(frozen=True)
class HealthConfig:
    interval: float = _seconds(1.0, "seconds between health checks")
    # As HAProxy does without `timeout check`: a check may take up to one interval, unless set.
    timeout: float = _seconds(1.0, "seconds a health check may take", shown_default="the interval")
    # The failover machine's hysteresis: its Policy holds the one default of each.
    fall: int = setting(
        Policy.fall,
        help="failed checks before a backend is down",
        parse=count,
        flag="--fall",
        metavar="N",
    )
    rise: int = setting(
        Policy.rise,
        help="passed checks before a backend is up",
        parse=count,
        flag="--rise",
        metavar="N",
    )
    path: str = setting("/healthz", help="health check path", parse=text, metavar="PATH")
    # code-server loads its VS Code server on the first GET / (even unauthenticated, before the
    # login redirect): 5-10 s on a busy machine, paid by the first user after a failover unless
    # the proxy asks first. None: no warm-up request.
    warmup_path: str | None = setting(
        "/",
        help="requested once each time a backend comes up, so code-server loads its VS Code"
        " server before a user needs it; empty: never",
        parse=optional_text,
        metavar="PATH",
    )


@dataclass(frozen=True)
class HooksConfig:
    before_failover: str | None = _command(
        "command run before traffic moves to the standby (fence the sync); the switch waits"
    )
    on_failover: str | None = _command("command run after a failover")
    before_failback: str | None = _command(
        "command run before switching home (reverse sync); failback is abandoned if it fails"
    )
    on_failback: str | None = _command("command run after a failback")
    # Issue 18: run by POST /admin/switchover before the switch (flush, verify and fence the sync:
    # `dumont-provision sync flush`), and by POST /admin/resume (bring a GPU back: `pair resume`).
    switchover: str | None = _command(
        "command run by POST /admin/switchover before the switch (flush the sync); must exit 0"
    )
    resume: str | None = _command(
        "command run by POST /admin/resume in the background (bring a parked GPU back)"
    )
    timeout: float = _seconds(120.0, "seconds a hook may run")


@dataclass(frozen=True)
class LimitsConfig:
    """What one client may cost the proxy (issue 7); docs/SECURITY.md explains each default."""

    header_timeout: float = _seconds(
        10.0, "seconds a client has to send a whole request head, else 408"
    )
    keepalive_timeout: float = _seconds(75.0, "seconds an idle keep-alive connection stays open")
    body_timeout: float = _seconds(
        30.0, "seconds a request body may stall without a byte, else 408"
    )
    send_timeout: float = _seconds(
        60.0, "seconds a client may leave a response unread before it is cut off"
    )
    max_header_count: int = setting(
        100, help="header fields in a request, else 431", parse=count, metavar="N"
    )
    max_header_size: int = setting(
        8190, help="bytes in one header field, else 431", parse=count, metavar="N"
    )
    max_url_length: int = setting(
        8192, help="bytes in a request target, else 414", parse=count, metavar="N"
    )
    max_connections: int = setting(
        8000, help="open client connections per listener", parse=count, metavar="N"
    )
    max_connections_per_ip: int = setting(
        256, help="open connections from one client address per listener", parse=count, metavar="N"
    )


@dataclass(frozen=True)
class Http2Config:
    """HTTP/2 to the browser over TLS (issue 19); docs/HTTP2.md explains each bound."""

    enabled: bool = _flag(True, "offer HTTP/2 by ALPN on the TLS listener (HTTP/1.1 stays)")
    max_concurrent_streams: int = setting(
        128, help="streams open at once on one connection", parse=count, metavar="N"
    )
    max_header_list_size: int = setting(
        65536, help="bytes of one request's decoded header list, else GOAWAY", parse=count,
        metavar="N",
    )  # fmt: skip
    stream_window: int = setting(
        262144, help="bytes a stream may send before the proxy reads them on", parse=count,
        metavar="N",
    )  # fmt: skip
    max_resets: int = setting(
        200, help="streams a client may reset per reset_interval, else GOAWAY (CVE-2023-44487)",
        parse=count, metavar="N",
    )  # fmt: skip
    max_control_frames: int = setting(
        200, help="SETTINGS, PING and empty DATA frames a client may send per reset_interval",
        parse=count, metavar="N",
    )  # fmt: skip
    reset_interval: float = _seconds(10.0, "the window over which resets and floods are counted")


@dataclass(frozen=True)
class TLSConfig:
    cert: str | None = setting(
        None, help="PEM certificate chain: serve HTTPS", parse=optional_text, metavar="FILE"
    )
    key: str | None = setting(
        None, help="PEM private key for --tls-cert", parse=optional_text, metavar="FILE"
    )
    hsts: float = _seconds(  # Strict-Transport-Security max-age in seconds; 0: not sent
        0.0,
        "Strict-Transport-Security max-age on HTTPS responses; 0 sends none",
        positive=False,
    )


@dataclass(frozen=True)
class PricesConfig:
    """What the dashboard's savings panel computes with (None: not configured)."""

    standby_per_hour: float | None = _price(None, "standby VM price per hour")
    gpu_per_hour: float | None = _price(None, "GPU machine price per hour")
    downtime_per_minute: float | None = _price(None, "what a minute without the IDE costs")
    outage_minutes: float = _price(
        15.0, "minutes an interruption would cost without a standby", metavar="MIN"
    )


@dataclass(frozen=True)
class Config:
    # With [workspaces.NAME] tables or a state_dir these two are optional: when given, they are
    # the workspace named "default", which answers every Host.
    primary: URL | None = setting(
        None,
        help="the primary (GPU) code-server, e.g. http://GPU:8080",
        parse=backend_url,
        metavar="URL",
        shown_default="none",
    )
    standby: URL | None = setting(
        None,
        help="the standby (CPU) code-server, e.g. http://CPU:8080",
        parse=backend_url,
        metavar="URL",
        shown_default="none",
    )
    workspaces: tuple[WorkspaceSpec, ...] = setting(
        (), help="[workspaces.NAME] tables: one workspace each", parse=_workspaces, flag=None
    )
    default_workspace: str | None = setting(
        None,
        help="the workspace a Host no workspace names reaches (else: a 404 page)",
        parse=optional_text,
        metavar="NAME",
    )
    state_dir: Path | None = setting(
        None,
        help="directory keeping the workspaces the control API creates (SQLite); the TOML seeds it",
        parse=_directory,
        metavar="DIR",
        shown_default="none: API changes last until a restart",
    )
    listen: HostPort = setting(
        HostPort("0.0.0.0", 8888),
        help="public listener",
        parse=parse_host_port,
        metavar="HOST:PORT",
    )
    control_listen: HostPort = setting(
        HostPort("127.0.0.1", 8889),
        help="metrics and admin listener; a non-loopback address needs --admin-token",
        parse=parse_host_port,
        metavar="HOST:PORT",
    )
    health: HealthConfig = table(HealthConfig)
    failback: Literal["auto", "manual"] = setting(
        Policy.failback,
        help="switch home when the primary is healthy again: auto (after --failback-hold) or"
        " manual (admin command or the IDE notice)",
        choices=("auto", "manual"),
    )
    failback_hold: float = _seconds(
        Policy.failback_hold,
        "seconds the primary must stay healthy before automatic failback",
        positive=False,
    )
    admin_token: str | None = setting(
        None, help="bearer token for the control API", parse=optional_text, metavar="TOKEN"
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        (),
        help="comma-separated addresses/CIDRs whose X-Forwarded-* headers are trusted",
        parse=_networks,
        metavar="CIDRS",
        shown_default="none",
    )
    connect_timeout: float = _seconds(
        3.0, "seconds to connect to a backend before the request counts as a failure"
    )
    switch_wait: float = _seconds(
        10.0, "seconds an API request waits for a switch to finish before a 503", positive=False
    )
    shutdown_timeout: float = _seconds(
        10.0, "seconds in-flight requests get to finish on SIGTERM", positive=False
    )
    hooks: HooksConfig = table(HooksConfig)
    log_format: Literal["human", "json"] = setting(
        "human", help="log lines for people or machines", choices=("human", "json")
    )
    log_level: str = setting(
        "info",
        help="least severe logged",
        choices=("debug", "info", "warning", "error"),
    )
    access_log: bool = _flag(False, "log every request")
    limits: LimitsConfig = table(LimitsConfig)
    http2: Http2Config = table(Http2Config)
    tls: TLSConfig = table(TLSConfig)
    allow_python_parser: bool = _flag(
        False, "start even if aiohttp's C HTTP parser is missing (not for the internet)"
    )
    metrics: bool = _flag(True, "Prometheus /metrics on the control listener")
    prices: PricesConfig = table(PricesConfig)
    pages: PagesConfig = table(PagesConfig)
    auth: AuthConfig = table(AuthConfig)
    cluster: ClusterConfig = table(ClusterConfig)
    assets_dir: Path = setting(
        DEFAULT_ASSETS,
        help="directory holding templates/ and static/",
        parse=_assets,
        metavar="DIR",
        shown_default="the source tree",
    )


PROXY: Schema[Config] = Schema(
    Config, env_prefix="DUMONT_", error=ConfigError, config_env="DUMONT_CONFIG"
)
# Every setting a flag or the environment can give (the TOML-only [[pages.tips]] aside).
SETTINGS: tuple[Entry, ...] = PROXY.command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    PROXY.add_config_flag(parser, "TOML file with any of the settings below")
    PROXY.add_flags(parser)


# -------------------------------------------------------------------------------------- loading


def load_config(
    flags: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    file: str | Path | None = None,
) -> Config:
    """Build the Config from the three layers; the last one that sets a key wins."""
    values = PROXY.values(flags, env, file)
    if "health.interval" in values:
        values.setdefault("health.timeout", values["health.interval"])
    return _checked(PROXY.build(values))


def _checked(config: Config) -> Config:
    """What no single setting can say: how settings must agree with each other."""
    primary, standby = config.primary, config.standby
    if (primary is None) != (standby is None):
        missing = "standby" if standby is None else "primary"
        how = f"--{missing} or DUMONT_{missing.upper()}"
        raise ConfigError(missing, f"missing: give {how} (--primary and --standby go together)")
    if primary is None and not config.workspaces and config.state_dir is None:
        raise ConfigError(
            "primary",
            "missing: give --primary or DUMONT_PRIMARY and --standby,"
            " [workspaces.NAME] tables, or a state_dir",
        )
    if primary is not None and standby is not None and primary.origin() == standby.origin():
        raise ConfigError("standby", f"must differ from primary ({primary})")
    if (problem := config.cluster.problems(config.health.interval)) is not None:
        raise ConfigError(*problem)
    if config.default_workspace is not None:
        try:
            check_name("default_workspace", config.default_workspace)
        except _SettingError as exc:
            raise ConfigError(exc.key, exc.problem) from None
    try:
        configured_workspaces(config)
    except _SettingError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    try:
        check_auth(config.auth)
    except _SettingError as exc:
        raise ConfigError(exc.key, exc.problem) from None
    health = config.health
    for key, path in (("health.path", health.path), ("health.warmup_path", health.warmup_path)):
        if path is not None and not path.startswith("/"):
            raise ConfigError(key, f"must start with '/', got {path!r}")
    tls = config.tls
    if tls.cert and not tls.key:
        raise ConfigError("tls.key", "required with tls.cert (the certificate's private key)")
    if tls.key and not tls.cert:
        raise ConfigError("tls.cert", "required with tls.key (the certificate chain)")
    if tls.hsts and not tls.cert:
        raise ConfigError("tls.hsts", "needs tls.cert and tls.key: HSTS is only sent over HTTPS")
    if not config.control_listen.is_loopback and not config.admin_token:
        raise ConfigError(
            "admin_token",
            f"required when the control listener is not on loopback ({config.control_listen})",
        )
    return config


def configured_workspaces(config: Config) -> tuple[WorkspaceSpec, ...]:
    """The workspaces the flags and the TOML give: --primary/--standby as "default", answering
    every Host, then the [workspaces.NAME] tables."""
    found: list[WorkspaceSpec] = []
    if config.primary is not None and config.standby is not None:
        found.append(WorkspaceSpec("default", (CATCH_ALL,), config.primary, config.standby, {}, {}))
    for spec in config.workspaces:
        if spec.name == "default" and found:
            raise _SettingError("workspaces.default", "is --primary/--standby's workspace already")
        found.append(spec)
    HostTable(found, fallback=config.default_workspace)  # raises on a host two workspaces claim
    fallback = config.default_workspace
    # With a state directory the fallback may be a workspace the API made (proxy.sites checks).
    if (
        fallback is not None
        and config.state_dir is None
        and fallback not in {s.name for s in found}
    ):
        raise _SettingError("default_workspace", f"no workspace {fallback!r} is configured")
    return tuple(found)


def workspace_config(config: Config, spec: WorkspaceSpec) -> Config:
    """The proxy's settings as one workspace sees them: its backends and its overrides."""
    tables: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for dotted, value in spec.overrides.items():
        table_name, _, leaf = dotted.rpartition(".")
        if table_name:
            tables.setdefault(table_name, {})[leaf] = value
        else:
            top[leaf] = value
    health = tables.get("health", {})
    if "interval" in health and "timeout" not in health:
        health["timeout"] = health["interval"]  # as load_config: a check may take one interval
    for table_name, changes in tables.items():
        top[table_name] = dataclasses.replace(getattr(config, table_name), **changes)
    return dataclasses.replace(config, primary=spec.primary, standby=spec.standby, **top)


def parse_args(argv: Sequence[str] | None, prog: str = "dumont-proxy") -> argparse.Namespace:
    parser = command_parser(
        prog, "One URL in front of a primary (GPU) and a standby (CPU) code-server."
    )
    add_arguments(parser)
    return parser.parse_args(argv)
