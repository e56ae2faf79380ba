"""Tip variants: stable per browser, drawn by weight, counted per variant."""

from __future__ import annotations

import random
from collections import Counter

from proxy.pages import Tip, TipBook, TipCounts

A = Tip("a", "A", "a", "https://example.com/a", weight=1)
B = Tip("b", "B", "b", "https://example.com/b", weight=3)


def test_a_browser_keeps_its_variant() -> None:
    book = TipBook([A, B], random.Random(1))
    first = book.assign(None)
    assert first is not None
    assert all(book.assign(first.id) == first for _ in range(100))


def test_a_cookie_naming_a_removed_tip_gets_a_fresh_draw() -> None:
    book = TipBook([A], random.Random(1))
    assert book.assign("gone") == A


def test_weights_are_respected_over_many_browsers() -> None:
    book = TipBook([A, B], random.Random(20261128))
    draws = 20_000
    counts = Counter(tip.id for _ in range(draws) if (tip := book.assign(None)) is not None)
    # Expected share of B is 3/4; its standard deviation here is 0.003, so +-0.02 is over 6 sigma.
    assert abs(counts["b"] / draws - 0.75) < 0.02
    assert counts["a"] + counts["b"] == draws


def test_no_tips_no_variant() -> None:
    assert TipBook([]).assign(None) is None
    assert TipBook([]).snapshot() == {}


def test_impressions_and_clicks_are_counted_per_variant() -> None:
    book = TipBook([A, B])
    book.count_impression(A)
    book.count_impression(A)
    book.count_impression(B)
    book.count_click(A)
    counts = book.snapshot()
    assert counts == {"a": TipCounts(impressions=2, clicks=1), "b": TipCounts(1, 0)}
    book.count_click(B)
    assert counts["b"].clicks == 0  # a snapshot is a copy
