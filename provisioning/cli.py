"""``dumont-provision``: GPU <-> CPU pairs, their sync, and workspace snapshots.

A ProvisioningError is printed as one line on stderr and exits with its ``exit_status`` (2, or 3 for
a StateConflict: see provisioning.errors); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import provisioning.snapshot.cli
from provisioning.cli_pair import add_pair_subcommand
from provisioning.cli_sync import add_sync_subcommand
from provisioning.errors import ProvisioningError
from provisioning.settings import PROVISION, add_options, resolve
from proxy.settings import command_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "dumont-provision",
        "GPU <-> CPU standby pairs on Vast.ai and Google Cloud, and their file sync.",
    )
    PROVISION.add_config_flag(parser, "TOML file whose [provisioning] table holds any setting")
    add_options(parser, "store")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pair_subcommand(sub)
    add_sync_subcommand(sub)
    provisioning.snapshot.cli.add_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve(args)
        code: int = args.handler(args)
    except ProvisioningError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the cause carried
        print(f"dumont-provision: error: {message}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
