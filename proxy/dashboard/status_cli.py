"""``dumont-proxy status [--control HOST:PORT] [--admin-token T] [--json]``.

Reads the control listener's ``/admin/status`` (the dashboard's state) with the bearer token and
prints it as a terminal table. Exit 0 when something serves, 1 when nothing does, 2 when the proxy
cannot be asked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from proxy.dashboard.table import render_status

__all__ = ["status_main"]


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dumont-proxy status", description="Print the proxy's state as a table."
    )
    parser.add_argument(
        "--control",
        default=env.get("DUMONT_CONTROL_LISTEN", "127.0.0.1:8889"),
        metavar="HOST:PORT",
        help="the proxy's control listener (env DUMONT_CONTROL_LISTEN) [127.0.0.1:8889]",
    )
    parser.add_argument(
        "--admin-token",
        default=env.get("DUMONT_ADMIN_TOKEN"),
        metavar="TOKEN",
        help="bearer token for the control API (env DUMONT_ADMIN_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON instead")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait [5]")
    return parser


def status_main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    args = _parser(os.environ if env is None else env).parse_args(argv)
    control = args.control if "://" in args.control else f"http://{args.control}"
    if control.startswith("http://0.0.0.0:"):
        control = control.replace("0.0.0.0", "127.0.0.1", 1)
    request = urllib.request.Request(f"{control.rstrip('/')}/admin/status")
    if args.admin_token:
        request.add_header("Authorization", f"Bearer {args.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            state = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = " (give --admin-token or DUMONT_ADMIN_TOKEN)" if exc.code == 401 else ""
        print(f"dumont-proxy status: {control} answered HTTP {exc.code}{hint}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"dumont-proxy status: cannot ask {control}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(state, indent=2) if args.json else render_status(state))
    return 0 if state.get("active") else 1
