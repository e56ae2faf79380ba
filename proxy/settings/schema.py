"""A :class:`Schema` reads one settings model from its layers and builds its command line."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

from proxy.settings.model import Entry, build, entries
from proxy.settings.parsers import SettingError

__all__ = ["Schema", "command_parser"]

M = TypeVar("M")
ErrorFactory = Callable[[str, str], Exception]


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The one place a command's parser is made; its settings come from :meth:`Schema.add_flags`."""
    return argparse.ArgumentParser(prog=prog, description=description)


@dataclass(frozen=True)
class Schema(Generic[M]):
    """The settings of one command: ``model`` (a dataclass of :func:`~.setting` fields) and where
    its layers live.

    ``error`` turns ``(key, problem)`` into the exception the command's boundary prints as one
    line; ``toml_table`` is the file's table holding these settings (None: the top level);
    ``config_env`` names the variable that may name the file.
    """

    model: type[M]
    env_prefix: str
    error: ErrorFactory = SettingError
    toml_table: str | None = None
    config_env: str | None = None

    @cached_property
    def entries(self) -> tuple[Entry, ...]:
        return entries(self.model, self.env_prefix)

    @cached_property
    def _by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}

    @property
    def command_line(self) -> tuple[Entry, ...]:
        """The settings that have a flag (every one but TOML-only tables of records)."""
        return tuple(e for e in self.entries if e.option)

    def entry(self, key: str) -> Entry:
        return self._by_key[key]

    # ------------------------------------------------------------------------------ flags

    def add_config_flag(self, parser: argparse.ArgumentParser, help: str) -> None:
        env = f" (env {self.config_env})" if self.config_env else ""
        parser.add_argument("--config", metavar="FILE", help=f"{help}{env}")

    def add_flags(self, parser: argparse.ArgumentParser, keys: Iterable[str] | None = None) -> None:
        """Flags for ``keys`` (default: every setting with a flag). Each defaults to None, so that
        "not given" stays apart from "given the default"; the default is filled by :meth:`load`.
        """
        chosen = self.command_line if keys is None else tuple(self.entry(k) for k in keys)
        for e in chosen:
            if e.option is None:
                raise TypeError(f"{e.key} is a TOML-only setting: it has no flag")
            kwargs: dict[str, Any] = {"dest": e.dest, "default": None, "help": self.help_line(e)}
            takes = e.spec.takes
            if takes == "switch":
                kwargs["action"] = "store_true"
            elif takes == "toggle":
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = e.spec.metavar
                if takes == "many":
                    kwargs["action"] = "append"
            names = (e.spec.short, e.option) if e.spec.short else (e.option,)
            parser.add_argument(*names, **kwargs)
            # Marks the setting as taken by the (sub)command actually chosen, so that another
            # command's same-named option (snapshot's --exclude, say) is never filled by this one.
            parser.set_defaults(**{self._marker(e): True})

    def help_line(self, e: Entry) -> str:
        shown = e.help_default()
        parts = [e.spec.help]
        if shown is not None and e.spec.takes != "switch":
            parts.append(f"[{shown}]")
        if e.env:
            parts.append(f"(env {e.env})")
        # argparse %-formats help text: a literal % (ssh's %C in a default) must be doubled.
        return " ".join(parts).replace("%", "%%")

    def _marker(self, e: Entry) -> str:
        return f"_setting_{self.env_prefix}{e.dest}"

    def taken(self, flags: argparse.Namespace) -> tuple[Entry, ...]:
        """The settings whose flags the chosen (sub)command declared."""
        return tuple(e for e in self.entries if getattr(flags, self._marker(e), False))

    # ------------------------------------------------------------------------------- load

    def values(
        self,
        flags: argparse.Namespace | None = None,
        env: Mapping[str, str] | None = None,
        file: str | Path | None = None,
        *,
        only_taken: bool = False,
    ) -> dict[str, Any]:
        """Parsed values by dotted key, from every layer that set one (defaults not included).

        ``only_taken``: read only the settings the chosen subcommand declared (a shared TOML table
        or environment holds other subcommands' settings too).
        """
        env = env if env is not None else {}
        given = vars(flags) if flags is not None else {}
        path = (
            given.get("config") or file or (env.get(self.config_env) if self.config_env else None)
        )
        wanted = self.taken(flags) if only_taken and flags is not None else self.entries
        raw: dict[str, tuple[Any, bool]] = {}  # key -> (value, came as text)
        if path:
            for key, value in self._read_file(str(path)).items():
                raw[key] = (value, False)
        keys = {e.key for e in wanted}
        raw = {key: held for key, held in raw.items() if key in keys}
        for e in wanted:
            if e.env and e.env in env:
                raw[e.key] = (env[e.env], True)
            if e.option and given.get(e.dest) is not None:
                raw[e.key] = (given[e.dest], True)
        try:
            return {key: self._parse(key, value, as_text) for key, (value, as_text) in raw.items()}
        except SettingError as exc:
            raise self.error(exc.key, exc.problem) from None

    def _parse(self, key: str, raw: Any, as_text: bool) -> Any:
        spec = self.entry(key).spec
        parse = spec.parse_text if as_text and spec.parse_text and isinstance(raw, str) else None
        return (parse or spec.parse)(key, raw)

    def build(self, values: Mapping[str, Any]) -> M:
        """The model from parsed ``values``; a required setting nobody gave is an error."""
        for e in self.entries:
            if e.required and e.key not in values:
                how = " or ".join(name for name in (e.option, e.env) if name)
                raise self.error(e.key, f"missing: give {how}")
        result: M = build(self.model, values)
        return result

    def load(
        self,
        flags: argparse.Namespace | None = None,
        env: Mapping[str, str] | None = None,
        file: str | Path | None = None,
        *,
        only_taken: bool = False,
    ) -> M:
        return self.build(self.values(flags, env, file, only_taken=only_taken))

    def _read_file(self, path: str) -> dict[str, Any]:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise self.error("config", f"no such file: {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise self.error("config", f"bad config file {path}, cannot read it: {exc}") from None
        return self._document_values(document, path)

    def load_document(self, document: Mapping[str, Any], where: str) -> M:
        """The model from an already decoded TOML document alone (defaults for the rest)."""
        values = self._document_values(document, where)
        try:
            parsed = {key: self._parse(key, value, False) for key, value in values.items()}
        except SettingError as exc:
            raise self.error(exc.key, exc.problem) from None
        return self.build(parsed)

    def _document_values(self, document: Mapping[str, Any], where: str) -> dict[str, Any]:
        top: Any = document
        if self.toml_table is not None:
            top = document.get(self.toml_table, {})
            if not isinstance(top, dict):
                raise self.error(
                    self.toml_table, f"expected a table [{self.toml_table}] in {where}"
                )
        flat: dict[str, Any] = {}
        self._flatten(top, "", flat, where)
        return flat

    def _flatten(
        self, table: Mapping[str, Any], prefix: str, out: dict[str, Any], path: str
    ) -> None:
        for name, value in table.items():
            # Dashes as on the command line (user-data = ...) or underscores as in the key.
            key = prefix + name.replace("-", "_")
            if key in self._by_key:
                out[key] = value
            elif isinstance(value, dict) and any(k.startswith(f"{key}.") for k in self._by_key):
                self._flatten(value, f"{key}.", out, path)
            else:
                where = f"[{self.toml_table}] " if self.toml_table else ""
                raise self.error(key, f"unknown setting in {where}{path}")
