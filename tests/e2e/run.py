"""Run continuity scenarios, each on fresh hosts, with one Chromium for all of them."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.e2e.bed import BedSettings, ContinuityBed
from tests.e2e.report import write_report
from tests.e2e.scenario import SEED, Fault, run_scenario
from tests.support.browser import chromium

__all__ = ["run_continuity"]


def _keep(base: Path, into: Path) -> None:
    """Screenshots and logs of a scenario, for a person to look at (not committed)."""
    into.mkdir(parents=True, exist_ok=True)
    for pattern in (
        "*.png",
        "proxy.log",
        "*-disk/code-server.log",
        "writer.log",
        "*-disk/state/lsyncd.log",
    ):
        for path in base.glob(pattern):
            target = into / path.relative_to(base).as_posix().replace("/", "-")
            shutil.copyfile(path, target)


async def run_continuity(
    faults: Sequence[Fault],
    out_dir: Path,
    *,
    work_dir: Path | None = None,
    settings: BedSettings | None = None,
    artifacts: Path | None = None,
) -> dict[str, Any]:
    """Every fault on fresh hosts; the report goes to ``out_dir`` (continuity.json/.md)."""
    settings = settings or BedSettings()
    scenarios: list[dict[str, Any]] = []
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="dumont-continuity-", dir=work_dir) as tmp:
        async with chromium() as browser:
            for fault in faults:
                bed = ContinuityBed(Path(tmp) / fault, settings)
                bed.base.mkdir(parents=True)
                started = time.time()
                try:
                    await asyncio.to_thread(bed.start, SEED)
                    setup_s = time.time() - started
                    result = await run_scenario(bed, browser, fault)
                    result["setup_s"] = round(setup_s, 1)
                except Exception as exc:
                    result = {"fault": fault, "errors": [f"{type(exc).__name__}: {exc}"[:600]]}
                finally:
                    proxy_log = bed.proxy_log() if (bed.base / "proxy.log").exists() else ""
                    await asyncio.to_thread(bed.close)
                    if artifacts is not None:
                        _keep(bed.base, artifacts / fault)
                result["scenario_s"] = round(time.time() - started, 1)
                result["proxy_switch_log"] = [
                    line[:300] for line in proxy_log.splitlines() if "dumont.workspace" in line
                ][:40]
                scenarios.append(result)
    meta = {
        "command": "python scripts/continuity.py",
        "faults": list(faults),
        "total_s": round(time.time() - began, 1),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "topology": (
            "GPU and CPU hosts as network + mount namespaces on a bridge (10.231.X.0/24); "
            "code-server 4.139 on each, sshd on each, lsyncd on the GPU deployed by "
            "`dumont-provision sync deploy`; proxy in the root namespace with before_failover = "
            "`dumont-provision sync fence`, before_failback = `dumont-provision sync reverse`"
        ),
    }
    return write_report(scenarios, out_dir, meta)
