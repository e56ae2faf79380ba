"""The transition page: what it says for a snapshot, in the browser's language, with its tip, and
the headers that keep it from being cached, framed elsewhere or scripted inline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2

from proxy.failover import Role

from .config import Tip
from .i18n import strings_for
from .view import SwitchSnapshot

__all__ = [
    "SECURITY_HEADERS",
    "Phase",
    "TipCard",
    "TransitionRenderer",
    "direction_of",
    "phase_of",
    "safe_return_path",
]

Phase = Literal["lost", "switching", "connecting", "ready"]

# No inline script anywhere (the page's data travels in a JSON <script type="application/json">,
# which is not executed), no origin but ours, and framing only by our own pages (the watcher shows
# this page in an iframe over the IDE).
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class TipCard:
    id: str
    title: str
    text: str
    click_url: str


def phase_of(snapshot: SwitchSnapshot) -> Phase:
    """What the page shows: lost (red), switching (amber), connecting (amber, target up), ready
    (green). Mirrored in static/transition.js, which recomputes it on every event."""
    if snapshot.ready:
        return "ready"
    if snapshot.state == "unavailable" or snapshot.target is None:
        return "lost"
    healthy = snapshot.primary_healthy if snapshot.target == "primary" else snapshot.standby_healthy
    return "connecting" if healthy else "switching"


def direction_of(snapshot: SwitchSnapshot) -> Role:
    """The machine the user is heading to: the arrow points at it (reversed for a failback)."""
    return snapshot.target or snapshot.active or "standby"


def safe_return_path(candidate: str | None) -> str:
    """A same-origin path to go back to; anything else (other hosts, `//host`, schemes) is `/`."""
    if not candidate or not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return "/"
    if any(ord(char) < 0x20 for char in candidate):
        return "/"
    return candidate


class TransitionRenderer:
    """Renders templates/transition.html (autoescaped) for a snapshot."""

    def __init__(self, templates_dir: Path) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Fail at start-up, not during the first failover.
        self._template = self._env.get_template("transition.html")
        self._message = self._env.get_template("message.html")

    def render(
        self,
        snapshot: SwitchSnapshot,
        language: str,
        tip: Tip | None,
        *,
        return_path: str,
        embedded: bool,
    ) -> str:
        strings = strings_for(language)
        card = None
        if tip is not None:
            card = TipCard(
                id=tip.id,
                # The built-in tip is translated by id; configured tips are shown as written.
                title=strings.get(f"tip.{tip.id}.title", tip.title),
                text=strings.get(f"tip.{tip.id}.text", tip.text),
                click_url=f"/__dumont/tips/{tip.id}/click",
            )
        page_data = {
            "snapshot": snapshot.as_json(),
            "strings": dict(strings),
            "returnPath": return_path,
            "embedded": embedded,
        }
        return self._template.render(
            language=language,
            strings=strings,
            snapshot=snapshot,
            phase=phase_of(snapshot),
            heading_to=direction_of(snapshot),
            tip=card,
            embedded=embedded,
            # Rendered with |tojson, which escapes <, > and & so the JSON cannot close its tag.
            page_data=page_data,
        )

    def render_no_workspace(self, host: str | None) -> str:
        """The 404 page for a Host no workspace answers (never another person's IDE)."""
        return self._message.render(
            title="No workspace here",
            status="404 · no workspace",
            detail=f"No IDE is served at {host or 'this address'}.",
            hint="Check the address you opened, or ask whoever runs this proxy for your"
            " workspace's.",
            action_url=None,
            action="",
        )
