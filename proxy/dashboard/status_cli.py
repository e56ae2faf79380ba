"""``dumont-proxy status [--control HOST:PORT] [--admin-token T] [--json]``.

Reads the control listener's ``/admin/status`` (the dashboard's state) with the bearer token and
prints it as a terminal table. Exit 0 when something serves, 1 when nothing does, 2 when the proxy
cannot be asked.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.config import PROXY
from proxy.dashboard.table import render_status
from proxy.errors import ConfigError
from proxy.settings import (
    Schema,
    boolean,
    command_parser,
    optional_text,
    positive_seconds,
    setting,
    text,
)

__all__ = ["STATUS", "StatusSettings", "status_main"]


@dataclass(frozen=True)
class StatusSettings:
    # The proxy's own settings name the listener and the token: the same variables reach both.
    control: str = setting(
        str(PROXY.entry("control_listen").default),
        help="the proxy's control listener",
        parse=text,
        metavar="HOST:PORT",
        env="CONTROL_LISTEN",
    )
    admin_token: str | None = setting(
        None, help="bearer token for the control API", parse=optional_text, metavar="TOKEN"
    )
    json: bool = setting(
        False, help="print the raw JSON instead", parse=boolean, takes="switch", env=None
    )
    timeout: float = setting(
        5.0, help="seconds to wait", parse=positive_seconds, metavar="S", env=None
    )


STATUS: Schema[StatusSettings] = Schema(StatusSettings, env_prefix="DUMONT_", error=ConfigError)


def status_main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    parser = command_parser("dumont-proxy status", "Print the proxy's state as a table.")
    STATUS.add_flags(parser)
    try:
        settings = STATUS.load(parser.parse_args(argv), os.environ if env is None else env)
    except ConfigError as exc:
        print(f"dumont-proxy status: {exc}", file=sys.stderr)
        return 2
    control = settings.control if "://" in settings.control else f"http://{settings.control}"
    if control.startswith("http://0.0.0.0:"):
        control = control.replace("0.0.0.0", "127.0.0.1", 1)
    request = urllib.request.Request(f"{control.rstrip('/')}/admin/status")
    if settings.admin_token:
        request.add_header("Authorization", f"Bearer {settings.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            state = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = " (give --admin-token or DUMONT_ADMIN_TOKEN)" if exc.code == 401 else ""
        print(f"dumont-proxy status: {control} answered HTTP {exc.code}{hint}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"dumont-proxy status: cannot ask {control}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(state, indent=2) if settings.json else render_status(state))
    return 0 if state.get("active") else 1
