"""``dumont-proxy status [--control HOST:PORT] [--admin-token T] [--workspace NAME] [--json]``.

Reads the control listener's ``/admin/status`` (the dashboard's state) with the bearer token and
prints it as a terminal table. Exit 0 when something serves, 1 when nothing does, 2 when the proxy
cannot be asked.

A replica of a cluster (issue 16) prints one line first: which replica it is, which one leads, and
whether it routes (``/admin/cluster``; absent on a proxy that runs alone).

A proxy serving named workspaces (issue 15) is listed instead, one line per workspace, from
``/admin/overview``; exit 1 when any workspace has nothing serving. ``--workspace NAME`` prints the
table above for that one workspace (``/admin/workspaces/NAME/status``). A proxy started with
``--primary/--standby`` alone, or one older than the overview (404), gets the one table as before.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from proxy.config import PROXY
from proxy.dashboard.overview import cluster_card
from proxy.dashboard.table import render_status, render_workspaces
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
    workspace: str | None = setting(
        None,
        help="print this workspace's table (a proxy serving named workspaces lists them all)",
        parse=optional_text,
        metavar="NAME",
        env=None,
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
    asker = Asker(control.rstrip("/"), settings.admin_token, settings.timeout)
    try:
        cluster = asker.get("/admin/cluster", missing_ok=True)
        if cluster is not None and not settings.json:
            print(f"cluster: {cluster_card(cluster)['summary']}")
        if settings.workspace is not None:
            return _show(
                asker.get(f"/admin/workspaces/{quote(settings.workspace)}/status"), settings
            )
        overview = asker.get("/admin/overview", missing_ok=True)
        if overview is None or not overview.get("named_workspaces"):
            return _show(asker.get("/admin/status"), settings)
    except StatusError as exc:
        print(f"dumont-proxy status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(overview, indent=2) if settings.json else render_workspaces(overview))
    rows = overview["workspaces"]
    return 0 if rows and all(row["active"] for row in rows) else 1


def _show(state: Any, settings: StatusSettings) -> int:
    print(json.dumps(state, indent=2) if settings.json else render_status(state))
    return 0 if state.get("active") else 1


class StatusError(Exception):
    """The proxy could not be asked, or refused: one line for stderr."""


@dataclass(frozen=True)
class Asker:
    """The control API's GETs, with the bearer token, for one command's run."""

    control: str
    token: str | None
    timeout: float

    def get(self, path: str, *, missing_ok: bool = False) -> Any:
        """The JSON at ``path``; None for a 404 when ``missing_ok`` (an older proxy)."""
        request = urllib.request.Request(self.control + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            hint = " (give --admin-token or DUMONT_ADMIN_TOKEN)" if exc.code == 401 else ""
            raise StatusError(
                f"{self.control} answered HTTP {exc.code}{hint}{_detail(exc)}"
            ) from None
        except (OSError, ValueError) as exc:
            raise StatusError(f"cannot ask {self.control}: {exc}") from None


def _detail(error: urllib.error.HTTPError) -> str:
    """The proxy's one line about the problem (proxy.boundary's JSON), e.g. "no workspace 'x'"."""
    try:
        detail = json.load(error).get("detail")
    except (OSError, ValueError, AttributeError):
        return ""
    return f": {detail}" if isinstance(detail, str) and detail else ""
