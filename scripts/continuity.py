#!/usr/bin/env python3
"""Continuity run (issue 6): a user works in code-server on a GPU host, the GPU fails, the user
carries on on the standby, the GPU comes back and the proxy fails back. Measured and judged against
the issue's bars into reports/continuity.json and reports/continuity.md.

Real everything: two hosts as network namespaces (each with its own address, disk directory,
code-server 4.139 and sshd), lsyncd deployed by ``dumont-provision sync deploy``, the proxy with the
fence and reverse-sync hooks, Debian's Chromium driven by Playwright. Needs root (namespaces),
scripts/install-code-server.sh and the Debian packages. 1.5-6 minutes a fault on 2 cores (load).

Usage: ``.venv/bin/python scripts/continuity.py [--faults loud,frozen,partition] [--out reports]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.bed import BedSettings  # noqa: E402
from tests.e2e.hosts import namespaces_available  # noqa: E402
from tests.e2e.run import run_continuity  # noqa: E402
from tests.e2e.scenario import FAULTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help="comma-separated: loud,frozen,partition"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports", help="report directory")
    parser.add_argument("--sync-delay", type=float, default=BedSettings.sync_delay)
    parser.add_argument("--health-timeout", type=float, default=BedSettings.health_timeout)
    parser.add_argument("--fall", type=int, default=BedSettings.fall)
    parser.add_argument("--drain-timeout", type=float, default=BedSettings.drain_timeout)
    parser.add_argument("--artifacts", type=Path, help="keep screenshots and logs here")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
    if len(set(faults)) != len(faults):
        parser.error("each fault at most once per run (run the script again to repeat one)")
    why = namespaces_available()
    if why:
        print(f"continuity: cannot create network namespaces ({why}); run as root", file=sys.stderr)
        return 2
    settings = BedSettings(
        sync_delay=args.sync_delay,
        health_timeout=args.health_timeout,
        fall=args.fall,
        drain_timeout=args.drain_timeout,
    )
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="dumont-continuity-artifacts-"))
    report = asyncio.run(
        run_continuity(faults, args.out, settings=settings, artifacts=artifacts)  # type: ignore[arg-type]
    )
    print(f"screenshots and logs: {artifacts}")
    print((args.out / "continuity.md").read_text())
    print(json.dumps(report["bars"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
