"""``python -m provisioning.snapshot ...``: the snapshot commands without the rest of the CLI.

The same parser ``dumont-provision snapshot`` uses; handy on a machine where only this part is
wanted, and what bench/snapshot.py runs.
"""

from __future__ import annotations

import sys

from provisioning.errors import ProvisioningError
from provisioning.snapshot.cli import add_subcommand
from proxy.settings import command_parser


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m provisioning.snapshot", "Workspace snapshots.")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["snapshot", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.handler(args)
    except ProvisioningError as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return exc.exit_status
    return code


if __name__ == "__main__":
    sys.exit(main())
