"""Value parsers: ``parse(key, raw) -> value``, raising :class:`SettingError` that names the key.

``raw`` is what a layer holds: any TOML value from the file, a string from the environment or a
flag (a bool from a switch flag, a list from a repeated one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "Parser",
    "SettingError",
    "amount",
    "boolean",
    "choice",
    "count",
    "integer",
    "optional_text",
    "positive_seconds",
    "real",
    "seconds",
    "strict_boolean",
    "text",
    "texts",
]

Parser = Callable[[str, Any], Any]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingError(ValueError):
    """A setting is wrong: ``key`` is its dotted TOML name, ``problem`` one line about it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def text(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise SettingError(key, f"expected a string, got {raw!r}")
    return raw


def optional_text(key: str, raw: Any) -> str | None:
    """Empty means unset: ``--admin-token ''`` turns off what a file or the environment set."""
    value = text(key, raw).strip()
    return value or None


def texts(key: str, raw: Any) -> tuple[str, ...]:
    """A TOML array, a repeated flag, or comma-separated in the environment."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise SettingError(key, f"expected a list of strings, got {raw!r}")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _number(key: str, raw: Any, *, minimum: float | None, strict: bool) -> float:
    if isinstance(raw, bool):
        raise SettingError(key, f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingError(key, f"expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingError(key, f"expected a finite number, got {raw!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        relation = ">" if strict else ">="
        raise SettingError(key, f"must be {relation} {minimum:g}, got {raw!r}")
    return value


def real(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=None, strict=False)


def positive_seconds(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=True)


def seconds(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=False)


def amount(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0.0, strict=False)


def integer(key: str, raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise SettingError(key, f"expected a whole number, got {raw!r}")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SettingError(key, f"expected a whole number, got {raw!r}") from None


def count(key: str, raw: Any) -> int:
    value = integer(key, raw)
    if value < 1:
        raise SettingError(key, f"must be at least 1, got {raw!r}")
    return value


def boolean(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingError(key, f"expected true or false, got {raw!r}")


def strict_boolean(key: str, raw: Any) -> bool:
    """A TOML boolean and nothing else: ``watcher = "yes"`` or ``= 1`` is a mistake in a file."""
    if not isinstance(raw, bool):
        raise SettingError(key, f"must be true or false, got {raw!r}")
    return raw


def choice(*choices: str) -> Parser:
    """One of ``choices``, in any case; the value comes back spelt as declared."""
    by_fold = {c.lower(): c for c in choices}

    def parse(key: str, raw: Any) -> str:
        found = by_fold.get(text(key, raw).strip().lower())
        if found is None:
            raise SettingError(key, f"expected one of {', '.join(choices)}, got {raw!r}")
        return found

    return parse
