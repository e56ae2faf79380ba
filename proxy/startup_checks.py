"""Checks before the proxy listens: aiohttp's C parser, its version, and the file-descriptor limit.

The data plane parses with httptools (llhttp) on both listeners; aiohttp still parses what reaches
the proxy's own apps behind it and what the warm-up reads. aiohttp falls back silently to its
pure-Python HTTP parser when the C extension is missing or ``AIOHTTP_NO_EXTENSIONS`` is set. The
two parsers have disagreed on what is a valid request before (request-smuggling advisories were
fixed in one and not the other): the proxy refuses to start with the pure-Python one unless
``allow_python_parser`` says so.
"""

from __future__ import annotations

import logging
import resource

import aiohttp
from aiohttp import client_proto, http_parser, web_protocol

from .config import Config
from .errors import ConfigError
from .tls import server_context

__all__ = ["MIN_AIOHTTP", "check_startup", "parser_in_use", "raise_fd_limit"]

log = logging.getLogger("dumont.startup")

# 3.14.2 fixes CVE-2026-69243: a request smuggled in the body of a WebSocket upgrade.
MIN_AIOHTTP = (3, 14, 2)
# Each relayed connection holds two descriptors (browser and backend); plus listeners and logs.
FDS_PER_CONNECTION = 2
FD_MARGIN = 256


def parser_in_use() -> str:
    """ "C" when both the server's request parser and the client's response parser are llhttp."""
    # aiohttp.http_parser keeps its pure-Python classes under public *Py names and rebinds the
    # plain names to the C ones when the extension loads.
    server = getattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    client = getattr(client_proto, "HttpResponseParser", http_parser.HttpResponseParserPy)
    server_c = server is not http_parser.HttpRequestParserPy
    client_c = client is not http_parser.HttpResponseParserPy
    return "C" if server_c and client_c else "python"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard one; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return soft


def check_startup(config: Config) -> None:
    """Raises ConfigError (one line, naming the setting) when the proxy must not start."""
    if _version(aiohttp.__version__) < MIN_AIOHTTP:
        wanted = ".".join(map(str, MIN_AIOHTTP))
        raise ConfigError("aiohttp", f"version {aiohttp.__version__} < {wanted} (CVE-2026-69243)")
    if parser_in_use() != "C":
        if not config.allow_python_parser:
            raise ConfigError(
                "allow_python_parser",
                "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set, or the "
                "extension missing); refusing to face clients with the pure-Python parser",
            )
        log.warning("aiohttp's pure-Python HTTP parser is in use (allow_python_parser)")
    server_context(config.tls)  # a certificate that does not load stops start-up here
    needed = FDS_PER_CONNECTION * config.limits.max_connections + FD_MARGIN
    soft = raise_fd_limit(needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is below the %d that limits.max_connections=%d may need",
            soft,
            needed,
            config.limits.max_connections,
        )
