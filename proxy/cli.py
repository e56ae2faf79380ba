"""``dumont-proxy``: run the proxy; ``dumont-proxy status`` prints the proxy's state."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .config import load_config, parse_args
from .dashboard.status_cli import status_main
from .errors import ConfigError
from .logs import setup_logging
from .server import run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv[:1]) == ["status"]:
        return status_main(argv[1:])
    args = parse_args(argv)
    try:
        config = load_config(args, os.environ)
    except ConfigError as exc:
        print(f"dumont-proxy: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_format, config.log_level)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
