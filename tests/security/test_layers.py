"""Which layer refuses what: the attack table fed to llhttp (httptools) alone, without Dumont.

Cases marked "llhttp" must already be refused by the parser the data plane uses; cases marked
"dumont" must not be, or Dumont's own check would be dead code and docs/SECURITY.md wrong. When an
httptools upgrade moves a case from one column to the other, this test says so.
"""

from __future__ import annotations

import httptools

from .test_smuggling import CASES


class _Messages:
    """The callbacks llhttp needs; what they collect does not matter here."""

    def on_message_complete(self) -> None:
        return None


def _refused_by_llhttp(data: bytes) -> bool:
    parser = httptools.HttpRequestParser(_Messages())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return False
    except httptools.HttpParserError:
        return True
    return False


def test_llhttp_refuses_its_column_and_passes_ours() -> None:
    wrong: list[str] = []
    for name, data, expected, layer in CASES:
        refused = _refused_by_llhttp(data)
        if layer == "llhttp" and not refused:
            wrong.append(f"{name}: llhttp accepted it; the table says llhttp refuses it")
        if layer == "dumont" and refused and expected == 400:
            wrong.append(f"{name}: llhttp refuses it already; the table says dumont")
    assert wrong == []


# proxy.validation.screen_response_head leaves these to llhttp's response parser: if an httptools
# upgrade made it lenient, they would reach the browser, so this says so first.
LEFT_TO_LLHTTP_IN_RESPONSES = ("ctl-in-value", "del-in-value", "ctl-in-name", "cl-te", "cl-twice")


def test_llhttp_refuses_bad_fields_in_responses() -> None:
    from .test_responses import BAD_RESPONSES

    accepted = []
    for name in LEFT_TO_LLHTTP_IN_RESPONSES:
        parser = httptools.HttpResponseParser(_Messages())
        try:
            parser.feed_data(BAD_RESPONSES[name])
        except httptools.HttpParserError:
            continue
        accepted.append(name)
    assert accepted == []
