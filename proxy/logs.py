"""Log lines: one event per line, for people by default or as JSON for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Literal

__all__ = ["WorkspaceLog", "setup_logging"]


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # log.warning(..., extra={"fields": {"event": "switch_finished", ...}}): machines get the
        # facts as keys instead of parsing the message.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        self.converter = time.gmtime  # the Z in the format says UTC


class WorkspaceLog(logging.LoggerAdapter[logging.Logger]):
    """One workspace's lines: ``[NAME]`` leads the message and ``workspace`` is a JSON field, so
    a proxy serving a thousand says whose switch it was. The "default" workspace of a proxy
    started with --primary/--standby keeps its lines as they always read."""

    def __init__(self, logger: logging.Logger, workspace: str) -> None:
        super().__init__(logger)
        self.workspace = workspace
        self.prefix = "" if workspace == "default" else f"[{workspace}] "

    def process(self, msg: object, kwargs: MutableMapping[str, Any]) -> tuple[object, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["fields"] = {**extra.get("fields", {}), "workspace": self.workspace}
        kwargs["extra"] = extra
        return f"{self.prefix}{msg}", kwargs


def setup_logging(fmt: Literal["human", "json"], level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access logger is enabled separately (config access_log).
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
