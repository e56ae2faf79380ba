"""The continuity report: the issue's three bars judged on the scenarios, as JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["judge", "render_markdown", "write_report"]

USABLE_BAR_S = 20.0
SAVED_AGE_BAR_S = 2.0


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def judge(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each bar: met (True/False/None when not measured) and the numbers it was judged on."""
    bars: list[dict[str, Any]] = []
    lost = {}
    for s in scenarios:
        missing = _get(s, "rpo", "missing_written_2s_before_fault")
        saved = _get(s, "saved_edits_on_standby") or {}
        ages = _get(s, "saved_age_at_fault_s") or {}
        old_saved_lost = [
            n for n, ok in saved.items() if not ok and ages.get(n, 0) > SAVED_AGE_BAR_S
        ]
        lost[s["fault"]] = None if missing is None else len(missing) + len(old_saved_lost)
    measured = [v for v in lost.values() if v is not None]
    bars.append(
        {
            "bar": f"no saved file lost that was written more than {SAVED_AGE_BAR_S:g} s"
            " before the fault",
            "met": (sum(measured) == 0) if measured else None,
            "files_lost_per_fault": lost,
        }
    )
    loud = next((s for s in scenarios if s["fault"] == "loud"), None)
    usable = _get(loud, "usable", "usable_s")
    clicked = _get(loud, "usable", "clicked")
    bars.append(
        {
            "bar": f"usable workbench on the standby within {USABLE_BAR_S:g} s of a loud death,"
            " no click",
            "met": None if usable is None else (usable <= USABLE_BAR_S and not clicked),
            "usable_s": usable,
            "clicked": clicked,
        }
    )
    after = {}
    for s in scenarios:
        fb = s.get("failback") or {}
        after[s["fault"]] = {
            "failback": fb.get("outcome"),
            "attempts": len(fb.get("attempts") or []),
            "lost": fb.get("standby_writes_lost"),
        }
    judged = [a for a in after.values() if a["failback"] is not None]
    held = all(a["failback"] == "completed" and a["lost"] == [] for a in judged)
    # A scenario that never reached failback proves nothing: the bar is then not shown, not met.
    complete = len(judged) == len(after) > 0
    bars.append(
        {
            "bar": "nothing written on the standby lost after failback",
            "met": False if not held else (True if complete else None),
            "per_fault": after,
        }
    )
    return bars


def write_report(
    scenarios: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "load_at_end": os.getloadavg()[0],
        },
        **meta,
        "bars": judge(scenarios),
        "scenarios": scenarios,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "continuity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "continuity.md").write_text(render_markdown(report))
    return report


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Continuity run",
        "",
        f"Generated {report['generated']} on {report['machine']['cpus']} CPUs"
        f" (load average at the end: {report['machine']['load_at_end']:.1f}).",
        "Times are seconds from the fault. RPO: age of the newest checkpoint on the standby against"
        " the last one written before the fault. Unsaved: seconds from the last keystroke of the"
        " unsaved editor until code-server's backup of it was on the standby (the fault came a"
        " second after that).",
        "",
        "| fault | detect | switch | standby serves | workbench usable | click? | failed requests"
        " | RPO | lost (>2 s old) | saved edits | unsaved: backup on standby | unsaved editor"
        " | failback | standby writes lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        sw, rpo, us = s.get("switch") or {}, s.get("rpo") or {}, s.get("usable") or {}
        saved = s.get("saved_edits_on_standby")
        fb = s.get("failback") or {}
        missing = rpo.get("missing_written_2s_before_fault")
        lines.append(
            "| "
            + " | ".join(
                [
                    s["fault"],
                    _fmt(sw.get("detection_s")),
                    _fmt(sw.get("switch_s")),
                    _fmt(sw.get("fault_to_standby_s")),
                    _fmt(us.get("usable_s")),
                    _fmt(us.get("clicked")),
                    _fmt(_get(s, "browser_after_fault", "failed_requests")),
                    _fmt(rpo.get("rpo_s"), 2),
                    _fmt(None if missing is None else len(missing)),
                    _fmt(None if saved is None else all(saved.values())),
                    _fmt(s.get("unsaved_backup_on_standby_s")),
                    _fmt(_get(s, "unsaved_editor", "survived")),
                    f"{_fmt(fb.get('outcome'))} ({len(fb.get('attempts') or [])} tries)"
                    if fb
                    else "—",
                    _fmt(None if not fb else len(fb.get("standby_writes_lost") or [])),
                ]
            )
            + " |"
        )
    lines += ["", "## Bars", ""]
    for bar in report["bars"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[bar["met"]]
        detail = {k: v for k, v in bar.items() if k not in ("bar", "met")}
        lines.append(f"- {bar['bar']}: **{verdict}** `{json.dumps(detail, default=str)}`")
    errors = [(s["fault"], e) for s in report["scenarios"] for e in s.get("errors", [])]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {fault}: {e.splitlines()[0][:300]}" for fault, e in errors]
    return "\n".join(lines) + "\n"
