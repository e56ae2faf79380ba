"""The [pages] table: defaults, a full table, and errors that name the exact key."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.pages import DEFAULT_TIP, PagesConfig, Tip


def tip(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "gpu-rent",
        "title": "Rent a GPU",
        "text": "By the minute.",
        "link": "https://example.com/gpu",
        "weight": 2,
    } | overrides


def test_defaults_are_the_seed_tip_with_watcher_and_tips_on() -> None:
    config = PagesConfig.from_mapping({})
    assert config == PagesConfig()
    assert config.watcher
    assert config.tips_enabled
    assert config.tips == (DEFAULT_TIP,)
    assert (DEFAULT_TIP.title, DEFAULT_TIP.text) == (
        "Deploy an LLM in 2 min",
        "Ollama + GPU. Zero config.",
    )


def test_a_full_table() -> None:
    config = PagesConfig.from_mapping(
        {
            "watcher": False,
            "tips_enabled": True,
            "tips": [tip(), tip(id="b-2", weight=0.5, link="http://example.com/")],
        }
    )
    assert not config.watcher
    assert config.tips == (
        Tip("gpu-rent", "Rent a GPU", "By the minute.", "https://example.com/gpu", 2.0),
        Tip("b-2", "Rent a GPU", "By the minute.", "http://example.com/", 0.5),
    )


def test_weight_defaults_to_one() -> None:
    entry = tip()
    del entry["weight"]
    assert PagesConfig.from_mapping({"tips": [entry]}).tips[0].weight == 1.0


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"watchr": True}, "pages.watchr"),
        ({"watcher": "yes"}, "pages.watcher"),
        ({"tips_enabled": 1}, "pages.tips_enabled"),
        ({"tips": {"id": "x"}}, "pages.tips"),
        ({"tips": ["x"]}, "pages.tips[0]"),
        ({"tips": [tip(), tip(id="b", colour="red")]}, "pages.tips[1].colour"),
        ({"tips": [tip(), tip(id="b", weight=0)]}, "pages.tips[1].weight"),
        ({"tips": [tip(weight=-1)]}, "pages.tips[0].weight"),
        ({"tips": [tip(weight=True)]}, "pages.tips[0].weight"),
        ({"tips": [tip(weight="2")]}, "pages.tips[0].weight"),
        ({"tips": [tip(weight=float("nan"))]}, "pages.tips[0].weight"),
        ({"tips": [tip(id="Bad_Id")]}, "pages.tips[0].id"),
        ({"tips": [tip(id="")]}, "pages.tips[0].id"),
        ({"tips": [tip(), tip()]}, "pages.tips[1].id"),
        ({"tips": [tip(link="javascript:alert(1)")]}, "pages.tips[0].link"),
        ({"tips": [tip(link="ftp://example.com/")]}, "pages.tips[0].link"),
        ({"tips": [tip(link="/relative")]}, "pages.tips[0].link"),
        ({"tips": [tip(title="  ")]}, "pages.tips[0].title"),
        ({"tips": [{k: v for k, v in tip().items() if k != "text"}]}, "pages.tips[0].text"),
    ],
)
def test_errors_name_the_exact_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PagesConfig.from_mapping(table)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"config error: {key}: ")
