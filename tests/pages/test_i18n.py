"""Language choice from Accept-Language, and a catalogue complete in every language."""

from __future__ import annotations

import pytest

from proxy.pages import choose_language, strings_for
from proxy.pages.i18n import CATALOGUE, DEFAULT_LANGUAGE


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("pt-BR", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("pt", "pt-BR"),
        ("pt-PT, en;q=0.9", "pt-BR"),
        ("en-US,en;q=0.9,pt-BR;q=0.8", "en"),
        ("en;q=0.2, pt-BR;q=0.9", "pt-BR"),
        ("fr-FR, fr;q=0.9, pt;q=0.5, en;q=0.4", "pt-BR"),
        ("de", "en"),
        ("*", "en"),
        ("en;q=0, *", "pt-BR"),
        ("pt-BR;q=0, en;q=0", "en"),
        ("pt;q=0.5, en;q=0.5", "pt-BR"),
        ("en;q=1.5, pt", "pt-BR"),
        ("garbage;;q=, pt", "pt-BR"),
    ],
)
def test_choose_language(header: str | None, language: str) -> None:
    assert choose_language(header) == language


def test_every_language_has_every_key() -> None:
    keys = set(CATALOGUE[DEFAULT_LANGUAGE])
    for language, strings in CATALOGUE.items():
        assert set(strings) == keys, language
        assert all(text.strip() for text in strings.values()), language


def test_the_strings_the_issue_names() -> None:
    en, pt = strings_for("en"), strings_for("pt-BR")
    assert (en["status.switching"], pt["status.switching"]) == (
        "Switching machines…",
        "Trocando de máquina…",
    )
    assert (en["status.connecting"], pt["status.connecting"]) == ("Connecting…", "Conectando…")
    assert (en["tip.label"], pt["tip.label"]) == ("Pro tip", "Dica profissional")
    assert en["notice.failback"] == "Your GPU machine is back — switch now?"
    assert (en["role.primary"], en["role.standby"]) == ("GPU", "CPU Backup")
    assert strings_for("xx") is CATALOGUE[DEFAULT_LANGUAGE]
