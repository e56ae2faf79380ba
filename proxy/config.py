"""Typed configuration, layered: defaults < TOML file < DUMONT_* environment < command-line flags.

Every setting is declared once in ``SETTINGS``; the TOML key, the environment variable, the flag
and its ``--help`` line all come from that one declaration, so they cannot drift apart. A bad value
stops start-up with one ``ConfigError`` line naming the key.
"""

from __future__ import annotations

import argparse
import ipaddress
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from yarl import URL

from .errors import ConfigError
from .pages.config import PagesConfig

__all__ = [
    "SETTINGS",
    "Config",
    "HealthConfig",
    "HooksConfig",
    "HostPort",
    "LimitsConfig",
    "PricesConfig",
    "Setting",
    "TLSConfig",
    "add_arguments",
    "load_config",
    "parse_backend_url",
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


@dataclass(frozen=True)
class HealthConfig:
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 2
    rise: int = 3
    path: str = "/healthz"
    # code-server loads its VS Code server on the first GET / (even unauthenticated, before the
    # login redirect): 5-10 s on a busy machine, paid by the first user after a failover unless
    # the proxy asks first. None: no warm-up request.
    warmup_path: str | None = "/"


@dataclass(frozen=True)
class HooksConfig:
    before_failover: str | None = None
    on_failover: str | None = None
    before_failback: str | None = None
    on_failback: str | None = None
    # Issue 18: run by POST /admin/switchover before the switch (flush, verify and fence the sync:
    # `dumont-provision sync flush`), and by POST /admin/resume (bring a GPU back: `pair resume`).
    switchover: str | None = None
    resume: str | None = None
    timeout: float = 120.0


@dataclass(frozen=True)
class LimitsConfig:
    """What one client may cost the proxy (issue 7); docs/SECURITY.md explains each default."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    max_header_count: int = 100
    max_header_size: int = 8190
    max_url_length: int = 8192
    max_connections: int = 8000
    max_connections_per_ip: int = 256


@dataclass(frozen=True)
class TLSConfig:
    cert: str | None = None
    key: str | None = None
    hsts: float = 0.0  # Strict-Transport-Security max-age in seconds; 0: not sent


@dataclass(frozen=True)
class PricesConfig:
    """What the dashboard's savings panel computes with (None: not configured)."""

    standby_per_hour: float | None = None
    gpu_per_hour: float | None = None
    downtime_per_minute: float | None = None
    outage_minutes: float = 15.0


@dataclass(frozen=True)
class Config:
    primary: URL
    standby: URL
    listen: HostPort = HostPort("0.0.0.0", 8888)
    control_listen: HostPort = HostPort("127.0.0.1", 8889)
    health: HealthConfig = field(default_factory=HealthConfig)
    failback: Literal["auto", "manual"] = "auto"
    failback_hold: float = 30.0
    admin_token: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 3.0
    switch_wait: float = 10.0
    shutdown_timeout: float = 10.0
    hooks: HooksConfig = field(default_factory=HooksConfig)
    log_format: Literal["human", "json"] = "human"
    log_level: str = "info"
    access_log: bool = False
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    allow_python_parser: bool = False
    metrics: bool = True
    prices: PricesConfig = field(default_factory=PricesConfig)
    pages: PagesConfig = field(default_factory=PagesConfig)
    assets_dir: Path = field(default_factory=lambda: DEFAULT_ASSETS)
    """Tables owned by feature packages (``[pages]``), validated by them."""


# ------------------------------------------------------------------------------------ parsers

Parser = Callable[[str, Any], Any]


def _text(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, f"expected a string, got {raw!r}")
    return raw


def _optional_text(key: str, raw: Any) -> str | None:
    value = _text(key, raw).strip()
    return value or None


def parse_backend_url(key: str, raw: Any) -> URL:
    text = _text(key, raw).strip()
    try:
        url = URL(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"not a URL: {text!r} ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(key, f"expected http://HOST:PORT or https://HOST:PORT, got {text!r}")
    if url.query_string or url.fragment:
        raise ConfigError(key, f"a backend URL takes no query or fragment: {text!r}")
    try:
        url.port  # noqa: B018 - yarl raises here for a port out of range
    except ValueError as exc:
        raise ConfigError(key, f"bad port in {text!r}") from exc
    return url.with_path(url.path.rstrip("/") or "/")


def _host_port(key: str, raw: Any) -> HostPort:
    text = _text(key, raw).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(key, f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port must be 0-65535, got {port}")
    return HostPort(host, port)


def _number(key: str, raw: Any, *, minimum: float, strict: bool) -> float:
    if isinstance(raw, bool):
        raise ConfigError(key, f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a number of seconds, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(key, f"expected a finite number, got {raw!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ConfigError(key, f"must be {relation} {minimum:g}, got {raw!r}")
    return value


def _positive_seconds(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=True)


def _seconds(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=False)


def _amount(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=False)


def _count(key: str, raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ConfigError(key, f"expected a whole number, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(key, f"must be at least 1, got {raw!r}")
    return value


def _flag(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true or false, got {raw!r}")


def _choice(*choices: str) -> Parser:
    def parse(key: str, raw: Any) -> str:
        text = _text(key, raw).strip().lower()
        if text not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {raw!r}")
        return text

    return parse


def _assets(key: str, raw: Any) -> Path:
    path = Path(_text(key, raw)).expanduser()
    missing = [d for d in ("templates", "static") if not (path / d).is_dir()]
    if missing:
        raise ConfigError(key, f"{path} has no {' or '.join(missing)} directory")
    return path


def _networks(key: str, raw: Any) -> tuple[IPNetwork, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError(key, f"expected a list of addresses or CIDR networks, got {raw!r}")
    nets: list[IPNetwork] = []
    for item in items:
        text = _text(key, item).strip()
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(key, f"not an address or CIDR network: {text!r}") from None
    return tuple(nets)


# ----------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    key: str  # dotted TOML path: "health.interval" is [health] interval
    parse: Parser
    help: str
    flag: str = ""  # default: the key with dots and underscores as dashes
    metavar: str | None = None

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.replace(".", "-").replace("_", "-")

    @property
    def env(self) -> str:
        return "DUMONT_" + self.option[2:].replace("-", "_").upper()

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "primary",
        parse_backend_url,
        "the primary (GPU) code-server, e.g. http://GPU:8080",
        metavar="URL",
    ),
    Setting(
        "standby",
        parse_backend_url,
        "the standby (CPU) code-server, e.g. http://CPU:8080",
        metavar="URL",
    ),
    Setting("listen", _host_port, "public listener [0.0.0.0:8888]", metavar="HOST:PORT"),
    Setting(
        "control_listen",
        _host_port,
        "metrics and admin listener [127.0.0.1:8889]; a non-loopback address needs --admin-token",
        metavar="HOST:PORT",
    ),
    Setting("health.interval", _positive_seconds, "seconds between health checks [1]", metavar="S"),
    Setting(
        "health.timeout",
        _positive_seconds,
        "seconds a health check may take [the interval]",
        metavar="S",
    ),
    Setting("health.fall", _count, "failed checks before a backend is down [2]", flag="--fall"),
    Setting("health.rise", _count, "passed checks before a backend is up [3]", flag="--rise"),
    Setting("health.path", _text, "health check path [/healthz]", metavar="PATH"),
    Setting(
        "health.warmup_path",
        _optional_text,
        "requested once each time a backend comes up, so code-server loads its VS Code server"
        " before a user needs it; empty: never [/]",
        metavar="PATH",
    ),
    Setting(
        "failback",
        _choice("auto", "manual"),
        "switch home when the primary is healthy again: auto (after --failback-hold) or manual "
        "(admin command or the IDE notice) [auto]",
    ),
    Setting(
        "failback_hold",
        _seconds,
        "seconds the primary must stay healthy before automatic failback [30]",
        metavar="S",
    ),
    Setting("admin_token", _optional_text, "bearer token for the control API", metavar="TOKEN"),
    Setting(
        "trusted_proxies",
        _networks,
        "comma-separated addresses/CIDRs whose X-Forwarded-* headers are trusted [none]",
        metavar="CIDRS",
    ),
    Setting(
        "connect_timeout",
        _positive_seconds,
        "seconds to connect to a backend before the request counts as a failure [3]",
        metavar="S",
    ),
    Setting(
        "switch_wait",
        _seconds,
        "seconds an API request waits for a switch to finish before a 503 [10]",
        metavar="S",
    ),
    Setting(
        "shutdown_timeout",
        _seconds,
        "seconds in-flight requests get to finish on SIGTERM [10]",
        metavar="S",
    ),
    Setting(
        "hooks.before_failover",
        _optional_text,
        "command run before traffic moves to the standby (fence the sync); the switch waits",
        metavar="CMD",
    ),
    Setting("hooks.on_failover", _optional_text, "command run after a failover", metavar="CMD"),
    Setting(
        "hooks.before_failback",
        _optional_text,
        "command run before switching home (reverse sync); failback is abandoned if it fails",
        metavar="CMD",
    ),
    Setting("hooks.on_failback", _optional_text, "command run after a failback", metavar="CMD"),
    Setting(
        "hooks.switchover",
        _optional_text,
        "command run by POST /admin/switchover before the switch (flush the sync); must exit 0",
        metavar="CMD",
    ),
    Setting(
        "hooks.resume",
        _optional_text,
        "command run by POST /admin/resume in the background (bring a parked GPU back)",
        metavar="CMD",
    ),
    Setting("hooks.timeout", _positive_seconds, "seconds a hook may run [120]", metavar="S"),
    Setting("log_format", _choice("human", "json"), "log lines for people or machines [human]"),
    Setting(
        "log_level", _choice("debug", "info", "warning", "error"), "least severe logged [info]"
    ),
    Setting("access_log", _flag, "log every request [false]", metavar="BOOL"),
    Setting(
        "assets_dir",
        _assets,
        "directory holding templates/ and static/ [the source tree]",
        metavar="DIR",
    ),
    Setting(
        "limits.header_timeout",
        _positive_seconds,
        "seconds a client has to send a whole request head, else 408 [10]",
        metavar="S",
    ),
    Setting(
        "limits.keepalive_timeout",
        _positive_seconds,
        "seconds an idle keep-alive connection stays open [75]",
        metavar="S",
    ),
    Setting(
        "limits.body_timeout",
        _positive_seconds,
        "seconds a request body may stall without a byte, else 408 [30]",
        metavar="S",
    ),
    Setting(
        "limits.send_timeout",
        _positive_seconds,
        "seconds a client may leave a response unread before it is cut off [60]",
        metavar="S",
    ),
    Setting(
        "limits.max_header_count", _count, "header fields in a request, else 431 [100]", metavar="N"
    ),
    Setting(
        "limits.max_header_size", _count, "bytes in one header field, else 431 [8190]", metavar="N"
    ),
    Setting(
        "limits.max_url_length", _count, "bytes in a request target, else 414 [8192]", metavar="N"
    ),
    Setting(
        "limits.max_connections",
        _count,
        "open client connections per listener [8000]",
        metavar="N",
    ),
    Setting(
        "limits.max_connections_per_ip",
        _count,
        "open connections from one client address per listener [256]",
        metavar="N",
    ),
    Setting("tls.cert", _optional_text, "PEM certificate chain: serve HTTPS", metavar="FILE"),
    Setting("tls.key", _optional_text, "PEM private key for --tls-cert", metavar="FILE"),
    Setting(
        "tls.hsts",
        _seconds,
        "Strict-Transport-Security max-age on HTTPS responses; 0 sends none [0]",
        metavar="S",
    ),
    Setting(
        "allow_python_parser",
        _flag,
        "start even if aiohttp's C HTTP parser is missing (not for the internet) [false]",
        metavar="BOOL",
    ),
    Setting("metrics", _flag, "Prometheus /metrics on the control listener [true]", metavar="BOOL"),
    Setting("prices.standby_per_hour", _amount, "standby VM price per hour", metavar="USD"),
    Setting("prices.gpu_per_hour", _amount, "GPU machine price per hour", metavar="USD"),
    Setting(
        "prices.downtime_per_minute", _amount, "what a minute without the IDE costs", metavar="USD"
    ),
    Setting(
        "prices.outage_minutes",
        _amount,
        "minutes an interruption would cost without a standby [15]",
        metavar="MIN",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}
# Tables that belong to feature packages; they validate their own keys.
FEATURE_SECTIONS = frozenset({"pages"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of the settings below (env DUMONT_CONFIG)",
    )
    for s in SETTINGS:
        parser.add_argument(
            s.option, dest=s.dest, metavar=s.metavar, help=f"{s.help} (env {s.env})"
        )


# -------------------------------------------------------------------------------------- loading


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, Any], path: str) -> None:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if key in _BY_KEY:
            out[key] = value
        elif not prefix and name in FEATURE_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(key, f"expected a table [{key}] in {path}")
        elif isinstance(value, dict) and any(k.startswith(f"{key}.") for k in _BY_KEY):
            _flatten(value, f"{key}.", out, path)
        else:
            raise ConfigError(key, f"unknown setting in {path}")


def _read_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"no such file: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    flat: dict[str, Any] = {}
    _flatten(document, "", flat, path)
    sections = {name: document[name] for name in FEATURE_SECTIONS if name in document}
    return flat, sections


def load_config(
    flags: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    file: str | Path | None = None,
) -> Config:
    """Build the Config from the three layers; the last one that sets a key wins."""
    env = env if env is not None else {}
    flag_values = vars(flags) if flags is not None else {}
    path = flag_values.get("config") or (str(file) if file else None) or env.get("DUMONT_CONFIG")
    raw: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    if path:
        raw, sections = _read_file(str(path))
    for s in SETTINGS:
        if s.env in env:
            raw[s.key] = env[s.env]
        if flag_values.get(s.dest) is not None:
            raw[s.key] = flag_values[s.dest]
    values = {key: _BY_KEY[key].parse(key, value) for key, value in raw.items()}
    return _assemble(values, sections)


def _subsection(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(prefix)}


def _tls(values: dict[str, Any]) -> TLSConfig:
    tls = TLSConfig(**_subsection(values, "tls."))
    if tls.cert and not tls.key:
        raise ConfigError("tls.key", "required with tls.cert (the certificate's private key)")
    if tls.key and not tls.cert:
        raise ConfigError("tls.cert", "required with tls.key (the certificate chain)")
    if tls.hsts and not tls.cert:
        raise ConfigError("tls.hsts", "needs tls.cert and tls.key: HSTS is only sent over HTTPS")
    return tls


def _assemble(values: dict[str, Any], sections: dict[str, Any]) -> Config:
    for required in ("primary", "standby"):
        if required not in values:
            flag = _BY_KEY[required]
            raise ConfigError(required, f"missing: give {flag.option} or {flag.env}")
    primary, standby = cast(URL, values["primary"]), cast(URL, values["standby"])
    if primary.origin() == standby.origin():
        raise ConfigError("standby", f"must differ from primary ({primary})")
    interval = values.get("health.interval", HealthConfig.interval)
    health = HealthConfig(
        interval=interval,
        # As HAProxy does without `timeout check`: a check may take up to one interval.
        timeout=values.get("health.timeout", interval),
        fall=values.get("health.fall", HealthConfig.fall),
        rise=values.get("health.rise", HealthConfig.rise),
        path=values.get("health.path", HealthConfig.path),
        warmup_path=values.get("health.warmup_path", HealthConfig.warmup_path),
    )
    for key, path in (("health.path", health.path), ("health.warmup_path", health.warmup_path)):
        if path is not None and not path.startswith("/"):
            raise ConfigError(key, f"must start with '/', got {path!r}")
    hooks = HooksConfig(
        **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("hooks.")}
    )
    prices = PricesConfig(
        **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("prices.")}
    )
    top = {k: v for k, v in values.items() if "." not in k}
    top.update(limits=LimitsConfig(**_subsection(values, "limits.")), tls=_tls(values))
    pages = PagesConfig.from_mapping(sections.get("pages", {}))
    config = Config(health=health, hooks=hooks, prices=prices, pages=pages, **top)
    if not config.control_listen.is_loopback and not config.admin_token:
        raise ConfigError(
            "admin_token",
            f"required when the control listener is not on loopback ({config.control_listen})",
        )
    return config


def parse_args(argv: Sequence[str] | None, prog: str = "dumont-proxy") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="One URL in front of a primary (GPU) and a standby (CPU) code-server.",
    )
    add_arguments(parser)
    return parser.parse_args(argv)
