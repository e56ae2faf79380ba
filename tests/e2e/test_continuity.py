"""Issue 6, continuity half: the GPU dies under a working user; the standby carries on; failback.

In CI this runs the loud death (SIGKILL of every process of the GPU host) because one scenario
costs 1.5-6 minutes on 2 cores with Chromium and two code-servers; ``scripts/continuity.py`` runs
all three faults and writes reports/. ``DUMONT_E2E_FAULTS=loud,frozen,partition`` runs more here.

The bars are asserted generously (a loaded CI machine is slower than a GPU box) and reported
exactly in the JSON and Markdown the test writes to its tmp dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.run import run_continuity
from tests.e2e.scenario import FAULTS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.codeserver,
]

FAULTS_HERE = [f for f in os.environ.get("DUMONT_E2E_FAULTS", "loud").split(",") if f in FAULTS]


@pytest.mark.timeout(660)
@pytest.mark.usefixtures("namespaces")
async def test_user_keeps_working_through_a_gpu_death(tmp_path: Path) -> None:
    report = await run_continuity(
        FAULTS_HERE,
        tmp_path / "report",
        work_dir=tmp_path,
        artifacts=tmp_path / "artifacts",
    )
    print((tmp_path / "report" / "continuity.md").read_text())
    for s in report["scenarios"]:
        context = json.dumps(s, indent=1, default=str)[:4000]
        assert not s["errors"], context
        # The switch happened, through the fence hook, and the standby serves.
        assert s["switch"]["outcome"] == "completed", context
        # Saved work: the user's saved files and every checkpoint older than 5 s are on the standby
        # (the bar is 2 s; it is reported exactly in the report).
        assert all(s["saved_edits_on_standby"].values()), context
        assert s["rpo"]["rpo_s"] is not None, context
        assert s["rpo"]["rpo_s"] < 5.0, context
        # A usable workbench on the standby, reloaded by the proxy's watcher, not by a click.
        assert s["usable"]["usable_s"] is not None, context
        assert s["usable"]["usable_s"] < 120.0, context
        assert not s["usable"]["clicked"], context
        # Failback: nothing the user wrote on the standby is lost.
        assert s["failback"]["outcome"] == "completed", context
        assert s["failback"]["standby_writes_lost"] == [], context
        if s["fault"] == "partition":
            p = s["partition"]
            assert all(p["standby_files_intact_after_heal"].values()), context
            assert not p["gpu_stale_copy_reached_standby"], context
            assert p["of_those_on_standby"] == 0, context
