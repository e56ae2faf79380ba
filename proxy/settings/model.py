"""Declaring settings: :func:`setting` for a leaf, :func:`table` for a nested TOML table.

The declaration is the dataclass field's metadata, so the model stays a plain frozen dataclass
that code builds directly (``HealthConfig(interval=0.5)``) and that a :class:`~.Schema` loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.settings.parsers import Parser, choice

__all__ = ["MISSING", "Entry", "Spec", "entries", "setting", "table"]

MISSING: Any = dataclasses.MISSING
_SPEC = "dumont_setting"
_TABLE = "dumont_table"

# How a flag takes its value: one string, a bare switch (store_true), a repeatable flag whose
# values add up (append), or --x / --no-x.
Takes = Literal["value", "switch", "many", "toggle"]


@dataclass(frozen=True)
class Spec:
    """What a setting is for and how it is read; its default is the dataclass field's."""

    help: str
    parse: Parser
    # Values from the environment or a flag (strings) when they read differently from TOML's.
    parse_text: Parser | None = None
    # None: TOML only. "": derived from the key (health.fall -> --health-fall).
    flag: str | None = ""
    short: str | None = None
    # None: no environment variable. "": derived from the flag; else the name after the prefix.
    env: str | None = ""
    metavar: str | None = None
    takes: Takes = "value"
    # For a default computed at load time, what --help says instead of the dataclass's value.
    shown_default: str | None = None


def setting(
    default: Any = MISSING,
    *,
    help: str,
    parse: Parser | None = None,
    choices: tuple[str, ...] = (),
    default_factory: Callable[[], Any] | Any = MISSING,
    **spec: Any,
) -> Any:
    """A leaf setting, as a dataclass field: ``fall: int = setting(2, help=..., parse=count)``."""
    if parse is None:
        if not choices:
            raise TypeError("setting() needs parse= or choices=")
        parse = choice(*choices)
        spec.setdefault("metavar", "{" + ",".join(choices) + "}")
    metadata = {_SPEC: Spec(help=help, parse=parse, **spec)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def table(model: type) -> Any:
    """A nested TOML table (``[health]``) whose fields are settings too."""
    return dataclasses.field(default_factory=model, metadata={_TABLE: model})


@dataclass(frozen=True)
class Entry:
    """One leaf of a model, flattened: the names a user types for it, and its default."""

    key: str  # dotted TOML path: "health.interval" is [health] interval
    spec: Spec
    default: Any  # MISSING: required
    option: str | None  # --health-interval, or None (TOML only)
    env: str | None  # DUMONT_HEALTH_INTERVAL, or None

    @property
    def dest(self) -> str:
        """The argparse attribute: the key, dots doubled into underscores."""
        return self.key.replace(".", "__")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def help_default(self) -> str | None:
        """The ``[...]`` of the help line, from the model's default (None: nothing to show)."""
        if self.spec.shown_default is not None:
            return self.spec.shown_default
        return show(self.default)


def show(value: Any) -> str | None:
    """A default as a user would type it back."""
    if value is MISSING or value is None or value == () or value == []:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return str(value)


def entries(model: type, env_prefix: str, prefix: str = "") -> tuple[Entry, ...]:
    """Every leaf of ``model`` (nested tables included), in declaration order."""
    found: list[Entry] = []
    for f in dataclasses.fields(model):
        key = prefix + f.name
        nested = f.metadata.get(_TABLE)
        if nested is not None:
            found.extend(entries(nested, env_prefix, f"{key}."))
            continue
        spec = f.metadata.get(_SPEC)
        if spec is None:
            raise TypeError(f"{model.__name__}.{f.name} is neither a setting() nor a table()")
        default = f.default
        if callable(f.default_factory):  # dataclasses.MISSING is not callable
            default = f.default_factory()
        option = None
        if spec.flag is not None:
            option = spec.flag or "--" + key.replace(".", "-").replace("_", "-")
        env = None
        if spec.env is not None:
            name = spec.env or (option[2:].replace("-", "_") if option else "")
            env = env_prefix + name.upper() if name else None
        found.append(Entry(key, spec, default, option, env))
    return tuple(found)


def build(model: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """``model`` from parsed ``values`` by dotted key; what is absent keeps its default."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(model):
        key = prefix + f.name
        nested = f.metadata.get(_TABLE)
        if nested is not None:
            kwargs[f.name] = build(nested, values, f"{key}.")
        elif key in values:
            kwargs[f.name] = values[key]
    return model(**kwargs)
