"""Every string the pages and the watcher show, in every language they speak, and the choice of
language from the browser's Accept-Language.

Templates and scripts never hold user-visible text: the template reads `strings[key]`, and the
scripts receive the same catalogue as JSON (embedded in the page, or from /__dumont/strings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["CATALOGUE", "DEFAULT_LANGUAGE", "LANGUAGES", "choose_language", "strings_for"]

DEFAULT_LANGUAGE = "en"

_EN: dict[str, str] = {
    "page.title": "Switching machines",
    "role.primary": "GPU",
    "role.standby": "CPU Backup",
    "status.switching": "Switching machines…",
    "status.connecting": "Connecting…",
    "status.ready": "Connected",
    "status.lost": "Waiting for a machine…",
    "detail.switching.standby": "Your GPU machine stopped answering. "
    "Moving your workspace to the CPU Backup, where your files already are.",
    "detail.switching.primary": "Your GPU machine is back. Moving your workspace home to it.",
    "detail.connecting.standby": "The CPU Backup is up. Opening your workspace there.",
    "detail.connecting.primary": "The GPU machine is up. Opening your workspace there.",
    "detail.ready.standby": "Your workspace is ready on the CPU Backup. Taking you back…",
    "detail.ready.primary": "Your workspace is ready on the GPU machine. Taking you back…",
    "detail.lost": "Neither machine is answering right now. "
    "This page carries on by itself as soon as one is back.",
    "hint.hands_free": "Nothing to click: this page continues by itself.",
    "hint.offline": "Lost contact with the proxy. Retrying…",
    "tip.label": "Pro tip",
    "tip.more": "Learn more",
    "tip.ollama-llm.title": "Deploy an LLM in 2 min",
    "tip.ollama-llm.text": "Ollama + GPU. Zero config.",
    "notice.failback": "Your GPU machine is back — switch now?",
    "notice.switch": "Switch now",
    "notice.dismiss": "Not now",
    "notice.failed": "The switch was refused. Try again in a moment.",
    "park.idle": "GPU idle for {idle} min: parking it in {left} min.",
    "park.keep": "Keep it",
    "park.parking": "Parking the idle GPU: {detail}",
    "park.parked": "GPU parked: you're on the CPU machine, your files are here.",
    "park.resume": "Bring the GPU back",
    "park.resuming": "Bringing the GPU back: {detail}",
    "park.park_failed": "The GPU was not parked and keeps running: {detail}",
    "park.resume_failed": "The GPU could not be brought back: {detail}",
    "park.refused": "That was refused. Try again in a moment.",
    "park.resumed": "GPU back in {seconds} s.",
    "park.step.renting": "renting a GPU",
    "park.step.filling": "filling the GPU with your files",
    "park.step.switching": "switching to the GPU",
}

_PT_BR: dict[str, str] = {
    "page.title": "Trocando de máquina",
    "role.primary": "GPU",
    "role.standby": "CPU reserva",
    "status.switching": "Trocando de máquina…",
    "status.connecting": "Conectando…",
    "status.ready": "Conectado",
    "status.lost": "Aguardando uma máquina…",
    "detail.switching.standby": "Sua máquina GPU parou de responder. "
    "Levando seu espaço de trabalho para a CPU reserva, onde seus arquivos já estão.",
    "detail.switching.primary": "Sua máquina GPU voltou. Levando seu espaço de trabalho de volta.",
    "detail.connecting.standby": "A CPU reserva está no ar. Abrindo seu espaço de trabalho nela.",
    "detail.connecting.primary": "A máquina GPU está no ar. Abrindo seu espaço de trabalho nela.",
    "detail.ready.standby": "Seu espaço de trabalho está pronto na CPU reserva. Voltando…",
    "detail.ready.primary": "Seu espaço de trabalho está pronto na máquina GPU. Voltando…",
    "detail.lost": "Nenhuma máquina está respondendo agora. "
    "Esta página continua sozinha assim que uma voltar.",
    "hint.hands_free": "Não precisa clicar em nada: esta página continua sozinha.",
    "hint.offline": "Sem contato com o proxy. Tentando de novo…",
    "tip.label": "Dica profissional",
    "tip.more": "Saiba mais",
    "tip.ollama-llm.title": "Suba um LLM em 2 min",
    "tip.ollama-llm.text": "Ollama + GPU. Zero configuração.",
    "notice.failback": "Sua máquina GPU voltou — trocar agora?",
    "notice.switch": "Trocar agora",
    "notice.dismiss": "Agora não",
    "notice.failed": "A troca foi recusada. Tente de novo em instantes.",
    "park.idle": "GPU ociosa há {idle} min: será estacionada em {left} min.",
    "park.keep": "Manter",
    "park.parking": "Estacionando a GPU ociosa: {detail}",
    "park.parked": "GPU estacionada: você está na máquina CPU, seus arquivos estão aqui.",
    "park.resume": "Trazer a GPU de volta",
    "park.resuming": "Trazendo a GPU de volta: {detail}",
    "park.park_failed": "A GPU não foi estacionada e continua ligada: {detail}",
    "park.resume_failed": "Não foi possível trazer a GPU de volta: {detail}",
    "park.refused": "Isso foi recusado. Tente de novo em instantes.",
    "park.resumed": "GPU de volta em {seconds} s.",
    "park.step.renting": "alugando uma GPU",
    "park.step.filling": "copiando seus arquivos para a GPU",
    "park.step.switching": "trocando para a GPU",
}

CATALOGUE: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(_EN), "pt-BR": MappingProxyType(_PT_BR)}
)
LANGUAGES = tuple(CATALOGUE)

# language-range [";" "q=" qvalue], RFC 9110 section 12.5.4.
_RANGE = re.compile(
    r"\s*(?P<tag>[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*"
    r"(?:;\s*q\s*=\s*(?P<q>0(?:\.\d{0,3})?|1(?:\.0{0,3})?))?\s*"
)


def strings_for(language: str) -> Mapping[str, str]:
    """The catalogue of `language`, or of the default language if we do not speak it."""
    return CATALOGUE.get(language, CATALOGUE[DEFAULT_LANGUAGE])


def choose_language(accept_language: str | None) -> str:
    """The catalogue language that best matches an Accept-Language header, honouring q-values.

    A range matches a language exactly (`pt-BR`), by its primary subtag (`pt`, `pt-PT` -> pt-BR:
    for a Portuguese reader, Brazilian Portuguese beats English), or `*` (any language not refused).
    Among equal q-values the earlier range wins; q=0 refuses a language; malformed ranges are
    ignored; no match at all gives the default language.
    """
    ranges: list[tuple[str, float]] = []
    for item in (accept_language or "").split(","):
        parsed = _RANGE.fullmatch(item)
        if parsed is not None:
            ranges.append((parsed.group("tag"), float(parsed.group("q") or 1)))
    refused = {_match(tag) for tag, quality in ranges if quality <= 0 and tag != "*"}
    acceptable = [language for language in LANGUAGES if language not in refused]
    # sorted() is stable: among equal q-values the earlier range stays first.
    for tag, quality in sorted(ranges, key=lambda pair: -pair[1]):
        if quality <= 0:
            continue
        language = acceptable[0] if tag == "*" and acceptable else _match(tag)
        if language in acceptable:
            return language
    return DEFAULT_LANGUAGE


def _match(tag: str) -> str | None:
    lowered = tag.lower()
    for language in LANGUAGES:
        if lowered == language.lower():
            return language
    primary = lowered.split("-", 1)[0]
    for language in LANGUAGES:
        if primary == language.lower().split("-", 1)[0]:
            return language
    return None
