"""One settings layer for every Dumont command: typed dataclasses in, typed dataclasses out.

A command declares its settings once, as fields of a frozen dataclass made with :func:`setting`
(a leaf) and :func:`table` (a nested TOML table). A :class:`Schema` over that dataclass derives the
rest, so that none of it can drift from the declaration:

- the TOML key (``health.interval`` is ``interval`` in the ``[health]`` table),
- the environment variable (``DUMONT_HEALTH_INTERVAL``: the schema's prefix and the flag's name),
- the command-line flag (``--health-interval``) and its ``--help`` line, whose ``[default]`` is
  the dataclass's own default,
- the value's parsing, with one-line errors that name the key (``health.fall: must be ...``).

Layers, the last that sets a key winning: the dataclass default < the TOML file < the
environment < the flags. The layer knows nothing of proxy/ or provisioning/ (neither may import
the other); each command passes the error class its own boundary prints.
"""

from __future__ import annotations

from proxy.settings.model import Entry, Spec, entries, setting, table
from proxy.settings.parsers import (
    Parser,
    SettingError,
    amount,
    boolean,
    choice,
    count,
    integer,
    optional_text,
    positive_seconds,
    real,
    seconds,
    strict_boolean,
    text,
    texts,
)
from proxy.settings.schema import Schema, command_parser

__all__ = [
    "Entry",
    "Parser",
    "Schema",
    "SettingError",
    "Spec",
    "amount",
    "boolean",
    "choice",
    "command_parser",
    "count",
    "entries",
    "integer",
    "optional_text",
    "positive_seconds",
    "real",
    "seconds",
    "setting",
    "strict_boolean",
    "table",
    "text",
    "texts",
]
