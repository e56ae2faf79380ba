"""Options for ``dumont-provision``: a flag, else ``DUMONT_PROVISION_<DEST>`` from the environment,
else the ``[provisioning]`` table of a TOML file (``--config``), else the built-in default.

The prefix is not the proxy's ``DUMONT_``: hooks inherit the proxy's environment, where
``DUMONT_STANDBY`` is an HTTP URL, not the SSH address ``--standby`` means here.

Flags are declared with :func:`option`, which records the built-in default apart from argparse's,
so that "not given" can be told from "given the default value".
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any

from provisioning.errors import UsageError

__all__ = ["ENV_PREFIX", "option", "resolve"]

ENV_PREFIX = "DUMONT_PROVISION_"

_DEFAULTS: dict[str, Any] = {}
_TYPES: dict[str, Any] = {}
_MARK = "_dumont_option_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def option(
    parser: argparse.ArgumentParser, flag: str, *, default: Any = None, help: str, **kwargs: Any
) -> None:
    dest = flag.lstrip("-").replace("-", "_")
    _DEFAULTS[dest] = default
    action = kwargs.get("action")
    _TYPES[dest] = {"store_true": "flag", "append": "list"}.get(
        action or "", kwargs.get("type", str)
    )
    env = f"{ENV_PREFIX}{dest.upper()}"
    shown = f"; default {default}" if default not in (None, False, []) else ""
    # argparse %-formats help text: a literal % (ssh's %C in a default) must be doubled.
    text = f"{help} (env {env}{shown})".replace("%", "%%")
    parser.add_argument(flag, dest=dest, default=None, help=text, **kwargs)
    # Marks the dest as ours for the subcommand actually chosen, so resolve() never touches a
    # same-named option of another command (snapshot's --exclude, say).
    parser.set_defaults(**{_MARK + dest: True})


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option left unset from the environment, the config file, then the default."""
    table = _load_table(getattr(args, "config", None) or os.environ.get(f"{ENV_PREFIX}CONFIG"))
    for dest, default in _DEFAULTS.items():
        if not getattr(args, _MARK + dest, False) or getattr(args, dest) not in (None, []):
            continue
        name = f"{ENV_PREFIX}{dest.upper()}"
        env = os.environ.get(name)
        if env is not None:
            setattr(args, dest, _convert(dest, env, f"env {name}"))
        elif dest in table:
            setattr(args, dest, _convert(dest, table[dest], f"{dest} in the config file"))
        else:
            setattr(args, dest, default)
    return args


def _convert(dest: str, value: Any, where: str) -> Any:
    kind = _TYPES[dest]
    if kind == "list":  # a TOML array, or comma-separated in the environment
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(item).strip() for item in items if str(item).strip()]
    if kind == "flag":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise UsageError(f"bad {where}: {value!r} is not a boolean")
        return text in _TRUE
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {where}: {value!r}: {exc}") from exc


def _load_table(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"bad config file {path}: {exc}") from exc
    table = data.get("provisioning", {})
    if not isinstance(table, dict):
        raise UsageError(f"bad config file {path}: [provisioning] must be a table")
    return {key.replace("-", "_"): value for key, value in table.items()}
