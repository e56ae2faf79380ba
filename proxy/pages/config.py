"""Settings of the transition pages: the `[pages]` table of the proxy's TOML configuration.

    [pages]
    watcher = true          # inject the in-IDE watcher into code-server's HTML documents
    tips_enabled = true     # show a tip card on the transition page

    [[pages.tips]]          # replaces the built-in tip when present; each browser keeps one variant
    id = "ollama-llm"       # [a-z0-9-]+, unique; used in the cookie and /__dumont/tips/<id>/click
    title = "Deploy an LLM in 2 min"
    text = "Ollama + GPU. Zero config."
    link = "https://github.com/ollama/ollama"   # http(s) only
    weight = 1.0            # > 0; the share of browsers that get this variant (default 1)

Errors name the exact key, with 0-based indices: `pages.tips[1].weight: must be a number > 0`.
`watcher` and `tips_enabled` are settings like the proxy's others (proxy.settings): also
`--pages-watcher` / `DUMONT_PAGES_WATCHER` and `--pages-tips-enabled` / `DUMONT_PAGES_TIPS_ENABLED`;
the tips, records with several fields, are given in the TOML file only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import ConfigError
from proxy.settings import Schema, SettingError, boolean, setting, strict_boolean, table

__all__ = ["DEFAULT_TIP", "PagesConfig", "Tip"]

_TIP_ID = re.compile(r"[a-z0-9-]+")
_TIP_ID_MAX = 64


@dataclass(frozen=True, slots=True)
class Tip:
    """One variant of the tip card."""

    id: str
    title: str
    text: str
    link: str
    weight: float = 1.0


# The seed's tip: "Pro tip — Deploy an LLM in 2 min: Ollama + GPU. Zero config." The "Pro tip" label
# comes from the catalogue; the catalogue also translates this tip's title and text by its id.
DEFAULT_TIP = Tip(
    id="ollama-llm",
    title="Deploy an LLM in 2 min",
    text="Ollama + GPU. Zero config.",
    link="https://github.com/ollama/ollama",
)


def _tips(key: str, raw: object) -> tuple[Tip, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise SettingError(key, "must be an array of tables ([[pages.tips]])")
    tips = tuple(_tip(entry, f"{key}[{index}]") for index, entry in enumerate(raw))
    seen: dict[str, int] = {}
    for index, tip in enumerate(tips):
        if tip.id in seen:
            raise SettingError(
                f"{key}[{index}].id", f"{tip.id!r} is already used by {key}[{seen[tip.id]}]"
            )
        seen[tip.id] = index
    return tips


@dataclass(frozen=True, slots=True)
class PagesConfig:
    # A TOML file says `watcher = true`; a string there is a mistake, in the environment it is not.
    watcher: bool = setting(
        True,
        help="inject the in-IDE watcher into code-server's HTML documents",
        parse=strict_boolean,
        parse_text=boolean,
        metavar="BOOL",
    )
    tips_enabled: bool = setting(
        True,
        help="show a tip card on the transition page",
        parse=strict_boolean,
        parse_text=boolean,
        metavar="BOOL",
    )
    tips: tuple[Tip, ...] = setting(
        (DEFAULT_TIP,), help="[[pages.tips]] tip card variants", parse=_tips, flag=None
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PagesConfig:
        """Parse the `[pages]` table (already decoded by tomllib). Missing keys keep defaults."""
        return _PAGES_TABLE.load_document({"pages": data}, "the [pages] table").pages


@dataclass(frozen=True)
class _PagesTable:
    """The `[pages]` table by itself, keyed as in the proxy's file (`pages.watcher`)."""

    pages: PagesConfig = table(PagesConfig)


_PAGES_TABLE: Schema[_PagesTable] = Schema(_PagesTable, env_prefix="DUMONT_", error=ConfigError)


def _tip(entry: object, where: str) -> Tip:
    if not isinstance(entry, Mapping):
        raise SettingError(where, "must be a table with id, title, text and link")
    _reject_unknown(entry, {"id", "title", "text", "link", "weight"}, where)
    tip_id = _text(entry, "id", where)
    if len(tip_id) > _TIP_ID_MAX or not _TIP_ID.fullmatch(tip_id):
        raise SettingError(
            f"{where}.id", f"must match [a-z0-9-]+ (at most {_TIP_ID_MAX}), got {tip_id!r}"
        )
    link = _text(entry, "link", where)
    parts = urlsplit(link)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SettingError(f"{where}.link", f"must be an absolute http(s) URL, got {link!r}")
    weight = entry.get("weight", 1.0)
    # bool is an int in Python; `weight = true` is a mistake, not a weight of 1.
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise SettingError(f"{where}.weight", f"must be a number > 0, got {weight!r}")
    if not (math.isfinite(weight) and weight > 0):
        raise SettingError(f"{where}.weight", f"must be a number > 0, got {weight!r}")
    return Tip(
        tip_id, _text(entry, "title", where), _text(entry, "text", where), link, float(weight)
    )


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    if key not in entry:
        raise SettingError(f"{where}.{key}", "is required")
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise SettingError(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value.strip()


def _reject_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise SettingError(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
