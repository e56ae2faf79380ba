"""Reading lsyncd's status file and log into facts a human (or a hook) can act on.

lsyncd never says "I am behind" by itself: it writes a status report (pending delays per sync,
watched directories) and a log. Only the log lines since the last ``--- Startup ---`` count.
The problems worth shouting about (docs/PROVISIONING.md): inotify watches exhausted (lsyncd
exits), event queue overflow (a full resync follows), rsync failing again and again (the standby is
fenced or unreachable), and lsyncd not running at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LsyncdReport", "parse_lsyncd"]

_DELAYS = re.compile(r"^There are (\d+) delays", re.MULTILINE)
_WATCHING = re.compile(r"^Inotify watching (\d+) directories", re.MULTILINE)
_STARTUP_DONE = re.compile(r'Startup of "([^"]*)" finished: (\d+)')
# "Retrying (list): 12" for a live sync, 'Retrying startup of "/src/": 12' for the startup pass.
_RETRYING = re.compile(r'Retrying (?:\(\w+\)|startup of "[^"]*"): (\d+)')
_FINISHED = re.compile(r"Finished \((\w+)\): 0")


@dataclass(frozen=True)
class LsyncdReport:
    running: bool
    pending_delays: int
    watched_directories: int
    startups_finished: int  # syncs whose startup full sync completed
    failing_retries: int  # rsync failures since the last success
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.problems


def parse_lsyncd(
    *, running: bool, status_text: str, log_text: str, roots: int, console_text: str = ""
) -> LsyncdReport:
    """``console_text`` is lsyncd's stdout/stderr: config errors never reach the log file."""
    start = log_text.rfind("--- Startup ---")
    log = log_text[start:] if start >= 0 else log_text
    delays = sum(int(n) for n in _DELAYS.findall(status_text))
    watching = sum(int(n) for n in _WATCHING.findall(status_text))
    finished = sum(1 for _path, code in _STARTUP_DONE.findall(log) if code == "0")
    failing = 0
    for line in log.splitlines():
        if _RETRYING.search(line):
            failing += 1
        elif _FINISHED.search(line) or _STARTUP_DONE.search(line):
            failing = 0
    problems: list[str] = []
    if "out of inotify watches" in log:
        problems.append(
            "lsyncd ran out of inotify watches and exited: raise fs.inotify.max_user_watches"
        )
    if "OVERFLOW" in log.upper():
        problems.append("inotify event queue overflowed: lsyncd does a full resync")
    if failing:
        last = _RETRYING.findall(log)[-1]
        problems.append(
            f"rsync to the standby failed {failing} times in a row (last exit {last}):"
            " the standby is fenced or unreachable"
        )
    if not running:
        errors = [line for line in console_text.splitlines() if "Error:" in line]
        why = f" (last error: {errors[-1].split('Error:', 1)[1].strip()})" if errors else ""
        problems.append(f"lsyncd is not running: nothing is being synced{why}")
    elif finished < roots and not failing:
        problems.append(f"first full sync still running ({finished} of {roots} roots done)")
    return LsyncdReport(
        running=running,
        pending_delays=delays,
        watched_directories=watching,
        startups_finished=finished,
        failing_retries=failing,
        problems=tuple(problems),
    )
