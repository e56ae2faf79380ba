"""One continuity scenario: the user works on the GPU, the GPU fails, the user carries on on the
standby, the GPU comes back and the proxy fails back; everything measured on the way.

Faults (``Fault``):
- ``loud``: SIGKILL of every process of the GPU host (code-server, sshd, lsyncd, the writer): the
  machine is gone, connections to it are refused.
- ``frozen``: SIGSTOP of every process of the GPU host: the kernel still accepts connections,
  nothing answers. The GPU comes back with SIGCONT.
- ``partition``: the GPU host's link goes down (``ip link set eth0 down`` inside the host). The GPU
  keeps running and writing; when the link returns its lsyncd pushes again and must be refused.

Times are wall-clock seconds from the fault. The proxy's switch record gives the switch's own timing
(``duration_s``: first failed check to the standby serving, including the fence hook);
``age_s`` dates its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from playwright.async_api import Browser

from tests.e2e.bed import PASSWORD, ContinuityBed
from tests.e2e.user import BrowserLog, User

__all__ = ["FAULTS", "Fault", "run_scenario"]

Fault = Literal["loud", "frozen", "partition"]
FAULTS: tuple[Fault, ...] = ("loud", "frozen", "partition")

SEED = {
    "train.py": "import torch\n\nEPOCHS = 10\n",
    "draft.txt": "ideas:\n",
    "README.md": "# experiment\n",
}
CREATED = "notes.md"
CREATED_TEXT = "# notes typed on the GPU\nloss went down\n"
EDIT_TEXT = "LR = 3e-4  # typed on the GPU\n"
UNSAVED_TEXT = "unsaved thought typed on the GPU"
STANDBY_TEXT = "typed on the standby after the switch\n"
STANDBY_FILE = "standby-only.md"
STANDBY_FILE_TEXT = "# written on the standby during the outage\n"
AFTER_HEAL_FILE = "after-heal.md"
AFTER_HEAL_TEXT = "# written on the standby after the link came back\n"
GPU_STALE_TEXT = "# the old primary's stale copy, written during the partition\n"


@dataclass(frozen=True)
class Limits:
    # After this long without a reload the user reloads by hand (recorded as a click). Generous:
    # on a loaded machine the watcher's reload itself can take longer than the 20 s bar.
    no_click_wait: float = 60.0
    usable_deadline: float = 180.0
    failback_deadline: float = 300.0
    failback_attempts: int = 3


async def _wait_file(path: Any, text: str, timeout: float) -> float | None:
    """Seconds until ``path`` contains ``text`` (None: not within ``timeout``)."""
    started = time.time()
    while time.time() - started < timeout:
        try:
            if text in path.read_text():
                return time.time() - started
        except (OSError, UnicodeDecodeError):
            pass
        await asyncio.sleep(0.05)
    return None


async def _save(user: User, path: Any, text: str, retries: list[str]) -> None:
    """Ctrl+S until ``text`` is on disk; a user presses it again when nothing seems to happen."""
    if not await user.wait_editor_contains(text.strip().splitlines()[-1], timeout=30):
        raise AssertionError(f"the text typed for {path.name} never showed in the editor")
    for attempt in range(3):
        await user.save()
        if await _wait_file(path, text, 20 * (attempt + 1)) is not None:
            return
        retries.append(path.name)
    raise AssertionError(f"{path.name} was not saved on {path.parent.parent.name}")


async def _user_works_on_gpu(bed: ContinuityBed, user: User, retries: list[str]) -> dict[str, Any]:
    """Create a file, edit another, both saved; leave a third edited and unsaved."""
    ws = bed.workspace(bed.gpu)
    saved_at: dict[str, float] = {}
    await user.new_file(CREATED)
    await user.type_at_end(CREATED_TEXT)
    await _save(user, ws / CREATED, CREATED_TEXT, retries)
    saved_at[CREATED] = time.time()
    await user.open_file("train.py")
    await user.type_at_end(EDIT_TEXT)
    await _save(user, ws / "train.py", EDIT_TEXT, retries)
    saved_at["train.py"] = time.time()
    await user.open_file("draft.txt")
    await user.type_at_end(UNSAVED_TEXT)
    if not await user.wait_editor_contains(UNSAVED_TEXT):
        raise AssertionError("the unsaved text never showed in the editor")
    unsaved_at = time.time()
    return {"saved_at": saved_at, "unsaved_at": unsaved_at}


def _inject(bed: ContinuityBed, fault: Fault) -> float:
    at = time.time()
    if fault == "loud":
        bed.gpu.kill_all()
    elif fault == "frozen":
        import signal

        bed.gpu.signal_all(signal.SIGSTOP)
    else:
        bed.gpu.link(False)
    return at


def _restore(bed: ContinuityBed, fault: Fault) -> None:
    """Bring the GPU back the way it would come back."""
    if fault == "loud":  # a new boot of the same machine: its disk is as it was
        bed.start_sshd(bed.gpu)
        bed.start_code_server(bed.gpu)
    elif fault == "frozen":
        import signal

        bed.gpu.signal_all(signal.SIGCONT)
    else:
        bed.gpu.link(True)


async def _watch_switch(bed: ContinuityBed, fault_at: float, timeout: float) -> dict[str, Any]:
    """Poll the proxy until a failover is finished; date its start and end on the wall clock."""
    detected_at = started_at = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = await asyncio.to_thread(bed.status)
        now = time.time()
        if status and status.get("backends", {}).get("primary", {}).get("healthy") is False:
            detected_at = detected_at or now
        failovers = [s for s in status.get("switches", []) if s["kind"] == "failover"]
        if failovers:
            record = failovers[0]
            started_at = started_at or now - record["age_s"]
            if record["outcome"] != "pending":
                return {
                    "record": record,
                    "primary_down_seen_s": None if detected_at is None else detected_at - fault_at,
                    "detection_s": started_at - fault_at,
                    "finished_s": now - fault_at,
                    "state": status.get("state"),
                }
        await asyncio.sleep(0.05)
    return {"record": None, "detection_s": None, "finished_s": None}


async def _wait_usable(
    bed: ContinuityBed, user: User, log: BrowserLog, fault_at: float, limits: Limits
) -> dict[str, Any]:
    """Until the browser shows a reloaded workbench in which a file opens and takes keystrokes."""
    result: dict[str, Any] = {"clicked": False, "reload_s": None, "usable_s": None}
    dialog_seen = overlay_seen = None
    while time.time() - fault_at < limits.usable_deadline:
        if await user.reloaded_and_ready():
            result["reload_s"] = time.time() - fault_at
            break
        if dialog_seen is None and await user.reconnect_dialog_shown():
            dialog_seen = time.time() - fault_at
        if overlay_seen is None and await user.transition_shown():
            overlay_seen = time.time() - fault_at
        reloaded = any(t >= fault_at for t, _ in log.navigations)
        if reloaded and "watcher_reload_s" not in result:
            result["watcher_reload_s"] = (
                min(t for t, _ in log.navigations if t >= fault_at) - fault_at
            )
        if not reloaded and not result["clicked"] and time.time() - fault_at > limits.no_click_wait:
            # No reload came: the user gives up waiting and reloads the page (counts as a click).
            result["clicked"] = True
            result["clicked_at_s"] = time.time() - fault_at
            result["page_at_click"] = user.page.url
            with contextlib.suppress(Exception):
                await user.page.screenshot(path=str(bed.base / "before-click.png"))
            try:
                await user.page.goto(bed.ide_url, timeout=60_000)
            except Exception as exc:
                result["reload_error"] = str(exc)[:200]
            if "/login" in user.page.url:
                result["had_to_log_in"] = True
                await user.open(bed.ide_url)
        await asyncio.sleep(0.1)
    result["reconnect_dialog_s"] = dialog_seen
    result["transition_screen_s"] = overlay_seen
    if result["reload_s"] is None:
        return result
    result["dirty_tabs_after_reload"] = await user.dirty_tabs()
    await user.open_file(CREATED)
    await user.type_at_end(STANDBY_TEXT)
    if await user.wait_editor_contains(STANDBY_TEXT.strip(), timeout=30):
        result["usable_s"] = time.time() - fault_at
    return result


async def _unsaved_survived(user: User) -> dict[str, Any]:
    dirty = await user.dirty_tabs()
    if "draft.txt" not in dirty:
        return {"survived": False, "dirty_tabs": dirty}
    await user.open_tab("draft.txt")
    return {"survived": await user.wait_editor_contains(UNSAVED_TEXT, 5), "dirty_tabs": dirty}


async def _backup_reaches_standby(
    bed: ContinuityBed, text: str, typed_at: float, timeout: float
) -> float | None:
    """Seconds from the last keystroke until a backup holding ``text`` is on the standby's disk."""
    root = bed.cpu.disk / "user-data" / "User" / "Backups"
    needle = text.encode()
    while time.time() - typed_at < timeout:
        for path in root.rglob("*") if root.is_dir() else ():
            with contextlib.suppress(OSError):
                if path.is_file() and needle in path.read_bytes():
                    return round(time.time() - typed_at, 2)
        await asyncio.sleep(0.1)
    return None


def _editor_backups(bed: ContinuityBed) -> dict[str, str]:
    """code-server's hot-exit backups on the standby: file -> its first line (resource, meta)."""
    root = bed.cpu.disk / "user-data" / "User" / "Backups"
    found = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else ():
        if path.is_file():
            with contextlib.suppress(OSError):
                found[str(path.relative_to(root))] = (
                    path.read_bytes().split(b"\n", 1)[0].decode(errors="replace")[:300]
                )
    return found


def _rpo(bed: ContinuityBed, fault_at: float) -> dict[str, Any]:
    written = bed.checkpoints_written()
    before = [c for c in written if c.written_at < fault_at]
    on_standby = bed.checkpoints_on(bed.cpu)
    if not before:
        return {"error": "no checkpoint written before the fault"}
    last = before[-1]
    present = [c for c in before if c.number in on_standby]
    newest = present[-1] if present else None
    old = [c for c in before if c.written_at < fault_at - 2.0]
    return {
        "written_before_fault": len(before),
        "last_before_fault": last.number,
        "newest_on_standby": None if newest is None else newest.number,
        "rpo_s": None if newest is None else round(last.written_at - newest.written_at, 3),
        "missing_written_2s_before_fault": sorted(
            c.number for c in old if c.number not in on_standby
        ),
        "newer_than_fault_on_standby": sorted(n for n in on_standby if n > last.number),
    }


async def run_scenario(
    bed: ContinuityBed, browser: Browser, fault: Fault, limits: Limits = Limits()
) -> dict[str, Any]:
    """The bed is started; returns the scenario's measurements (and ``errors``, if any)."""
    report: dict[str, Any] = {"fault": fault, "errors": []}
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    log = BrowserLog()
    log.attach(page)
    user = User(page, PASSWORD)
    try:
        await _scenario(bed, user, log, fault, limits, report)
    except Exception as exc:
        report["errors"].append(f"{type(exc).__name__}: {str(exc)[:500]}")
        with contextlib.suppress(Exception):
            await page.screenshot(path=str(bed.base / f"{fault}-failure.png"))
    finally:
        await context.close()
    return report


async def _scenario(
    bed: ContinuityBed,
    user: User,
    log: BrowserLog,
    fault: Fault,
    limits: Limits,
    report: dict[str, Any],
) -> None:
    t0 = time.time()
    await user.open(bed.ide_url)
    report["workbench_open_s"] = round(time.time() - t0, 2)
    bed.start_writer()
    report["load_at_start"] = os.getloadavg()[0]
    retries: list[str] = report.setdefault("save_retries", [])
    work = await _user_works_on_gpu(bed, user, retries)
    # The user pauses: code-server backs the unsaved editor up (about a second after the last
    # keystroke) and lsyncd carries the backup to the standby (its delay later). Measured, so the
    # report says how long unsaved text needs to survive; then a second more, and the fault.
    report["unsaved_backup_on_standby_s"] = await _backup_reaches_standby(
        bed, UNSAVED_TEXT, work["unsaved_at"], timeout=20.0
    )
    await asyncio.sleep(1.0)
    await user.mark()
    early = (await asyncio.to_thread(bed.status)).get("switches", [])
    if early:
        raise AssertionError(f"the proxy switched before the fault (machine overloaded?): {early}")
    fault_at = await asyncio.to_thread(_inject, bed, fault)
    report["fault_at"] = fault_at
    report["load_at_fault"] = os.getloadavg()[0]
    report["saved_age_at_fault_s"] = {
        k: round(fault_at - v, 2) for k, v in work["saved_at"].items()
    }
    report["unsaved_age_at_fault_s"] = round(fault_at - work["unsaved_at"], 2)

    switch = await _watch_switch(bed, fault_at, timeout=90)
    record = switch.get("record") or {}
    report["switch"] = {
        "outcome": record.get("outcome"),
        "reason": record.get("reason"),
        "detail": record.get("detail"),
        "detection_s": _r(switch.get("detection_s")),
        "switch_s": record.get("duration_s"),
        "fault_to_standby_s": _r(switch.get("finished_s")),
    }
    if record.get("outcome") != "completed":
        raise AssertionError(f"failover did not complete: {record or 'no switch record'}")
    # Fenced and serving: what the standby holds now is what the user gets.
    report["rpo"] = _rpo(bed, fault_at)
    report["standby_editor_backups"] = _editor_backups(bed)
    cpu_ws = bed.workspace(bed.cpu)
    report["saved_edits_on_standby"] = {
        CREATED: CREATED_TEXT in _read(cpu_ws / CREATED),
        "train.py": EDIT_TEXT in _read(cpu_ws / "train.py"),
    }

    usable = await _wait_usable(bed, user, log, fault_at, limits)
    report["usable"] = {k: _r(v) if isinstance(v, float) else v for k, v in usable.items()}
    if usable["usable_s"] is None:
        raise AssertionError("the workbench on the standby never became usable")
    report["unsaved_editor"] = await _unsaved_survived(user)
    report["browser_after_fault"] = log.after(fault_at)

    # The user saves the edit typed on the standby and writes a new file there.
    await user.open_file(CREATED)
    await _save(user, cpu_ws / CREATED, STANDBY_TEXT, retries)
    await user.new_file(STANDBY_FILE)
    await user.type_at_end(STANDBY_FILE_TEXT)
    await _save(user, cpu_ws / STANDBY_FILE, STANDBY_FILE_TEXT, retries)
    standby_writes = {CREATED: STANDBY_TEXT, STANDBY_FILE: STANDBY_FILE_TEXT}

    if fault == "partition":
        report["partition"] = await _partition_heals(bed, user, standby_writes, fault_at, retries)
    else:
        await asyncio.to_thread(_restore, bed, fault)
    report["failback"] = await _failback(bed, user, fault, standby_writes, limits)


async def _partition_heals(
    bed: ContinuityBed,
    user: User,
    standby_writes: dict[str, str],
    fault_at: float,
    retries: list[str],
) -> dict[str, Any]:
    """The GPU, still cut off and still writing, also rewrites the user's notes (newer mtime); the
    link returns; the user writes once more on the standby; the GPU's lsyncd must be refused."""
    gpu_ws, cpu_ws = bed.workspace(bed.gpu), bed.workspace(bed.cpu)
    (gpu_ws / CREATED).write_text(GPU_STALE_TEXT)  # the old primary's copy, newest mtime
    healed_at = time.time()
    await asyncio.to_thread(bed.gpu.link, True)
    await user.new_file(AFTER_HEAL_FILE)
    await user.type_at_end(AFTER_HEAL_TEXT)
    await _save(user, cpu_ws / AFTER_HEAL_FILE, AFTER_HEAL_TEXT, retries)
    standby_writes[AFTER_HEAL_FILE] = AFTER_HEAL_TEXT
    # Give the GPU's lsyncd time to reach the standby and be refused, twice.
    refused = -1
    deadline = time.time() + 60
    while time.time() < deadline:
        refused = await asyncio.to_thread(bed.lsyncd_failing_retries)
        if refused >= 2:
            break
        await asyncio.sleep(1.0)
    written = bed.checkpoints_written()
    last_before = max(c.number for c in written if c.written_at < fault_at)
    kept = {name: text in _read(cpu_ws / name) for name, text in standby_writes.items()}
    return {
        "lsyncd_refused_retries": refused,
        "checkpoints_gpu_wrote_after_fault": written[-1].number - last_before,
        "of_those_on_standby": len([n for n in bed.checkpoints_on(bed.cpu) if n > last_before]),
        "standby_files_intact_after_heal": kept,
        "gpu_stale_copy_reached_standby": GPU_STALE_TEXT in _read(cpu_ws / CREATED),
        "heal_to_check_s": round(time.time() - healed_at, 2),
    }


async def _failback(
    bed: ContinuityBed, user: User, fault: Fault, standby_writes: dict[str, str], limits: Limits
) -> dict[str, Any]:
    began = time.time()
    await asyncio.to_thread(bed.wait_healthy, bed.gpu, 120.0)
    deadline = time.time() + limits.failback_deadline
    answer: dict[str, Any] = {}
    while time.time() < deadline:  # the proxy needs `rise` good checks before it accepts
        answer = await asyncio.to_thread(bed.admin, "failback")
        if "error" not in answer:
            break
        await asyncio.sleep(0.5)
    requested_at = time.time()
    record: dict[str, Any] = {}
    attempts: list[dict[str, Any]] = []
    while time.time() < deadline and len(attempts) < limits.failback_attempts:
        status = await asyncio.to_thread(bed.status)
        backs = [s for s in status.get("switches", []) if s["kind"] == "failback"]
        if len(backs) > len(attempts) and backs[0]["outcome"] != "pending":
            record = backs[0]
            attempts.append({k: record.get(k) for k in ("outcome", "duration_s", "detail")})
            if record["outcome"] == "completed" or len(attempts) >= limits.failback_attempts:
                break
            # An operator tries again: the reverse sync is idempotent.
            while time.time() < deadline and "error" in (
                await asyncio.to_thread(bed.admin, "failback")
            ):
                await asyncio.sleep(0.5)
        await asyncio.sleep(0.2)
    gpu_ws = bed.workspace(bed.gpu)
    lost = [name for name, text in standby_writes.items() if text not in _read(gpu_ws / name)]
    backups = list((bed.gpu.disk / "state" / "reverse-backups").rglob("*"))
    return {
        "gpu_back_to_request_s": round(requested_at - began, 2),
        "attempts": attempts,
        "admin_answer": answer.get("error") or "accepted",
        "outcome": record.get("outcome"),
        "detail": record.get("detail"),
        "duration_s": record.get("duration_s"),
        "active_after": (await asyncio.to_thread(bed.status)).get("active"),
        "standby_writes": sorted(standby_writes),
        "standby_writes_lost": lost,
        "gpu_files_moved_aside": len([p for p in backups if p.is_file()]),
    }


def _read(path: Any) -> str:
    try:
        return str(path.read_text())
    except (OSError, UnicodeDecodeError):
        return ""


def _r(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value
