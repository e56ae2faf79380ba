"""Medians over runs, the printed table (Markdown, so the docs can quote it), JSON, the machine."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Bar",
    "Column",
    "Row",
    "check_bars",
    "load_summary",
    "machine_info",
    "machine_load",
    "median_rows",
    "render_bars",
    "render_table",
    "write_json",
]

Cell = float | str | None
Row = dict[str, Cell]


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: Literal["higher", "lower"] | None = None
    digits: int = 0


@dataclass(frozen=True)
class Bar:
    """A bar our proxy must meet: ``row[key] op factor * reference``.

    ``reference`` is a number, or the name of a row measured in the same run (a peer): then the
    bar is a ratio to that peer, e.g. ``Bar("...", "req_s", ">=", "haproxy", factor=0.5)`` for
    "at least half HAProxy's req/s" (issue 13). ``factor`` applies to a numeric reference too.
    """

    text: str
    key: str
    op: Literal[">=", "<=", "<"]
    reference: float | str
    factor: float = 1.0


def median_rows(
    runs: Sequence[Mapping[str, Row]], combine: Callable[[list[float]], float] = statistics.median
) -> dict[str, Row]:
    """Per proxy and metric, the median (or ``combine``) over runs; strings: the most common."""
    merged: dict[str, dict[str, list[Cell]]] = {}
    for run in runs:
        for name, row in run.items():
            for key, value in row.items():
                merged.setdefault(name, {}).setdefault(key, []).append(value)
    result: dict[str, Row] = {}
    for name, metrics in merged.items():
        result[name] = {}
        for key, values in metrics.items():
            numbers = [v for v in values if isinstance(v, int | float)]
            if numbers:
                result[name][key] = combine(numbers)
            else:
                texts = [v for v in values if isinstance(v, str)]
                result[name][key] = statistics.mode(texts) if texts else None
    return result


def _best(rows: Mapping[str, Row], peers: Sequence[str], column: Column) -> float | None:
    values = [
        v for name in peers if isinstance(v := rows.get(name, {}).get(column.key), int | float)
    ]
    if not values:
        return None
    return max(values) if column.better == "higher" else min(values)


def _cell(value: Cell, column: Column, best: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "never"
    text = f"{value:,.{column.digits}f}"
    if best:
        text += f" ({value / best:.2f})"
    return text


def render_table(
    rows: Mapping[str, Row], columns: Sequence[Column], peers: Sequence[str], first: str = "proxy"
) -> str:
    """A Markdown table; a numeric cell also shows its ratio to the best of ``peers``."""
    bests = {c.key: _best(rows, peers, c) if c.better else None for c in columns}
    header = [first, *(c.title for c in columns)]
    body = [
        [name, *(_cell(row.get(c.key), c, bests[c.key]) for c in columns)]
        for name, row in rows.items()
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(b) for b in body)])


def check_bars(row: Row, rows: Mapping[str, Row], bars: Sequence[Bar]) -> list[dict[str, Any]]:
    """Each bar with the measured value, the value it is held to and whether it is met.

    ``reference`` is the threshold itself (``factor`` times the peer's value for a ratio bar);
    a ratio bar also records ``peer``, ``peer_value`` and ``factor``. ``met`` is None when either
    side was not measured (the peer did not run, or failed).
    """
    results = []
    for bar in bars:
        value = row.get(bar.key)
        base: Cell = bar.reference
        extra: dict[str, Any] = {}
        if isinstance(bar.reference, str):
            base = rows.get(bar.reference, {}).get(bar.key)
            extra = {"peer": bar.reference, "peer_value": base, "factor": bar.factor}
        ref: Cell = bar.factor * base if isinstance(base, int | float) else None
        met: bool | None = None
        if isinstance(value, int | float) and isinstance(ref, int | float):
            met = {">=": value >= ref, "<=": value <= ref, "<": value < ref}[bar.op]
        results.append({"bar": bar.text, "value": value, "reference": ref, "met": met, **extra})
    return results


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return "-" if value is None else value


def render_bars(results: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for r in results:
        verdict = {True: "MET ", False: "MISS", None: "n/a "}[r["met"]]
        shown_ref = _number(r["reference"])
        if "peer" in r:
            peer = f"{_number(r['factor'])} x {r['peer']}'s {_number(r['peer_value'])}"
            shown_ref = f"{peer} = {shown_ref}"
        lines.append(f"  {verdict} {r['bar']}: {_number(r['value'])} (bar: {shown_ref})")
    return "\n".join(lines)


def _version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """Per pid: user + system clock ticks so far, and the command line."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd.strip()[:140])
    return ticks


def machine_load(sample: float = 1.0) -> dict[str, Any]:
    """The load average, and the processes busiest over the next ``sample`` seconds (% of a CPU)."""
    before = _cpu_ticks()
    time.sleep(sample)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = sorted(
        (
            (100 * (t - before[pid][0]) / hz / sample, pid, cmd)
            for pid, (t, cmd) in after.items()
            if pid in before and t > before[pid][0]
        ),
        reverse=True,
    )
    return {
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "busiest_processes": [f"{pct:5.1f}% {pid} {cmd}" for pct, pid, cmd in busy[:8]],
    }


def _dataplane_build() -> str:
    # The proxy under test imports from this checkout, so it judges its build the same way.
    import proxy.dataplane  # noqa: F401  (chooses the build)
    from proxy.compiled import BUILDS

    return BUILDS["proxy.dataplane"].describe()


def machine_info(sample: float = 1.0) -> dict[str, Any]:
    """What ran the benchmark and what else was busy on the machine when it started."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "commit": _version(["git", "-C", str(Path(__file__).parents[2]), "describe", "--always"]),
        "proxy_changes_not_committed": subprocess.run(
            ["git", "-C", str(Path(__file__).parents[2]), "status", "--short", "--", "proxy"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "dataplane": _dataplane_build(),
        "at_start": machine_load(sample),
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "caddy": _version(["caddy", "version"]),
        "wrk": _version(["wrk", "-v"]),
    }


def _plain(value: Any) -> Any:
    """JSON has no infinity: a switch that never happened is written as "never"."""
    if isinstance(value, float) and math.isinf(value):
        return "never"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def load_summary(machine: Mapping[str, Any]) -> str:
    start, end = machine["at_start"], machine.get("at_end", {})
    return (
        f"load average (1, 5, 15 min) at start {start['loadavg']}, at end {end.get('loadavg')}"
        f"\n{machine.get('dataplane', 'proxy.dataplane: build not recorded')}"
    )


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(_plain(payload), indent=2) + "\n")
