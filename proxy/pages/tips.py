"""The tip card's A/B test: one variant per browser, chosen by weight and kept in a cookie, with
impressions and clicks counted per variant.

The counts live in memory for the life of the proxy process; /__dumont/status and the metrics read
them through `TipBook.snapshot()`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config import PagesConfig, Tip

__all__ = ["TIP_COOKIE", "TIP_COOKIE_MAX_AGE", "TipBook", "TipCounts"]

TIP_COOKIE = "dumont_tip"
TIP_COOKIE_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TipCounts:
    impressions: int
    clicks: int


class TipBook:
    """Assigns variants and counts what each browser saw and clicked."""

    def __init__(self, tips: Sequence[Tip], rng: random.Random | None = None) -> None:
        self._tips = {tip.id: tip for tip in tips}
        self._weights = [tip.weight for tip in tips]
        self._rng = rng or random.Random()
        self._impressions = dict.fromkeys(self._tips, 0)
        self._clicks = dict.fromkeys(self._tips, 0)

    @classmethod
    def for_config(cls, config: PagesConfig, rng: random.Random | None = None) -> TipBook:
        """The book for ``[pages]``: its tips, or none when ``tips_enabled = false``."""
        return cls(config.tips if config.tips_enabled else (), rng)

    def assign(self, cookie: str | None) -> Tip | None:
        """The variant for a browser: the one its cookie names if that tip still exists, else a new
        draw by weight. None when there are no tips at all."""
        if cookie is not None and cookie in self._tips:
            return self._tips[cookie]
        if not self._tips:
            return None
        return self._rng.choices(list(self._tips.values()), weights=self._weights)[0]

    def get(self, tip_id: str) -> Tip | None:
        return self._tips.get(tip_id)

    def count_impression(self, tip: Tip) -> None:
        self._impressions[tip.id] += 1

    def count_click(self, tip: Tip) -> None:
        self._clicks[tip.id] += 1

    def snapshot(self) -> Mapping[str, TipCounts]:
        """Counts per variant id, in configuration order (a copy: safe to keep)."""
        return {
            tip_id: TipCounts(self._impressions[tip_id], self._clicks[tip_id])
            for tip_id in self._tips
        }
