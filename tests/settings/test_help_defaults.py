"""Every --help line's [default] is the settings model's own default, for every command.

The help text a setting declares never spells its default: the layer appends it from the model.
Here the real --help output of each command is read back and compared with the dataclasses'
defaults, so a default changed in the model shows in --help, and a default written by hand fails.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from provisioning.cli import main as provision_main
from provisioning.settings import PROVISION
from provisioning.snapshot.cli import SNAPSHOT
from proxy.config import PROXY
from proxy.dashboard.status_cli import STATUS
from proxy.settings import Entry, Schema

PROVISION_VERBS: list[list[str]] = [[]] + [
    ["pair", verb]
    for verb in (
        "create", "destroy", "list", "show", "reconcile", "gpu-lost",
        "switchover", "park", "resume", "idle", "autopark",
    )
] + [
    ["sync", verb]
    for verb in ("render", "deploy", "status", "fence", "flush", "unfence", "reverse", "snapshot")
] + [["snapshot", verb] for verb in ("create", "list", "restore", "prune")]  # fmt: skip


def squeezed(text: str) -> str:
    """argparse wraps help at spaces and after hyphens: compare without any whitespace."""
    return "".join(text.split())


def model_defaults(model: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, default) straight from the dataclasses, nested tables included."""
    for f in dataclasses.fields(model):
        if dataclasses.is_dataclass(f.default_factory):
            yield from model_defaults(f.default_factory, f"{prefix}{f.name}.")
        elif callable(f.default_factory):
            yield prefix + f.name, f.default_factory()
        else:
            yield prefix + f.name, f.default


def as_typed(value: Any) -> str | None:
    """A default as a user would type it back; None: nothing to show."""
    if value is dataclasses.MISSING or value is None or value in ((), []):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def expected_after_help(schema: Schema[Any], entry: Entry, default: Any) -> str:
    shown = entry.spec.shown_default or as_typed(default)
    if entry.spec.takes == "switch":
        shown = None
    text = entry.spec.help + (f" [{shown}]" if shown else "")
    return squeezed(text + (f" (env {entry.env})" if entry.env else ""))


def check(schema: Schema[Any], helps: list[str]) -> int:
    """Every setting's help in ``helps`` is followed by the model's default; returns how many."""
    joined = [squeezed(h) for h in helps]
    found = 0
    for key, default in model_defaults(schema.model):
        entry = schema.entry(key)
        if entry.option is None:
            continue
        # The old way: "seconds between checks [1]", written twice and free to drift.
        assert not re.search(r"\s\[[^\]]*\]\s*$", entry.spec.help), f"{key}: a default by hand"
        lead = squeezed(entry.spec.help)
        hits = [h for h in joined if lead in h]
        assert hits, f"{key} ({entry.option}) is in no --help"
        for text in hits:
            assert expected_after_help(schema, entry, default) in text, key
        found += 1
    return found


def test_dumont_proxy_help() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, timeout=30
    )
    assert check(PROXY, [run.stdout]) == len(PROXY.command_line)


def test_dumont_proxy_status_help() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check(STATUS, [run.stdout]) == len(STATUS.command_line)
    assert "[127.0.0.1:8889]" in run.stdout  # the proxy's own control_listen default


def _provision_helps(capsys: pytest.CaptureFixture[str]) -> list[str]:
    helps = []
    for command in PROVISION_VERBS:
        with pytest.raises(SystemExit) as exit_info:
            provision_main([*command, "--help"])
        assert exit_info.value.code == 0
        helps.append(capsys.readouterr().out)
    return helps


def test_dumont_provision_and_snapshot_help(capsys: pytest.CaptureFixture[str]) -> None:
    helps = _provision_helps(capsys)
    assert check(PROVISION, helps) == len(PROVISION.command_line)
    assert check(SNAPSHOT, helps) == len(SNAPSHOT.command_line)


def test_a_changed_default_shows_in_help() -> None:
    """The comparison above can fail: a model whose default moved is caught."""

    @dataclasses.dataclass(frozen=True)
    class Moved:
        fall: int = PROXY.entry("health.fall").default + 1

    entry = PROXY.entry("health.fall")
    help_line = PROXY.help_line(entry)
    assert expected_after_help(PROXY, entry, Moved().fall) not in squeezed(help_line)
    assert expected_after_help(PROXY, entry, entry.default) in squeezed(help_line)
