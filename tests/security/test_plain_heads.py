"""The data plane reads plain heads in one pass (proxy.dataplane.plain) and every other head with
llhttp. A head both can read must read the same: method, target, version, every field's name and
value byte for byte, keep-alive, status, reason. Hypothesis builds heads from the pieces that
parsers disagree on (whitespace around values, obs-text, control bytes, bare LF, odd names and
targets, framing fields); wherever the one-pass reader accepts one, llhttp must accept it too and
agree on every part of it.
"""

from __future__ import annotations

import httptools
from hypothesis import event, given, settings
from hypothesis import strategies as st

from proxy.dataplane.plain import plain_request, plain_response


class _Collected:
    """What llhttp hands over, gathered the way the data plane's callbacks gather it."""

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive: bool | None = None
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Asked here, as the data plane asks it: once the message is over llhttp forgets.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


# Mostly what a parser accepts, so that the one pass often reads the head and the comparison
# happens; a bad piece now and then, so that it is also seen declining.
GOOD_NAMES = [
    b"Host",
    b"Accept",
    b"X-A",
    b"x-a",
    b"Cookie",
    b"Connection",
    b"Keep-Alive",
    b"Set-Cookie",
    b"Content-Type",
    b"X-Dumont-Transition",
    b"Sec-Fetch-Mode",
]
NAMES = st.sampled_from(GOOD_NAMES * 8 + [b"Bad Name", b"X\x00Y", b"N\xe9", b"", b"A:B"])
# Any byte a value may hold (tabs, spaces at either end, obs-text), or one it may not.
GOOD_VALUES = st.text(
    st.characters(min_codepoint=0x09, max_codepoint=0xFF, exclude_characters="\n\x0b\x0c\r\x7f"
                  + "".join(map(chr, range(0x0E, 0x20)))),
    max_size=10,
).map(lambda v: v.encode("latin-1")) | st.sampled_from(
    [b"", b" ", b"\t", b" v ", b"\tv\t", b"keep-alive", b"close", b"Keep-Alive, X-A", b"upgrade"]
)  # fmt: skip
BAD_VALUES = st.sampled_from([b"a\x01b", b"a\x7fb", b"a\rb", b"a\nb", b"\x00"])


def _mostly(
    good: st.SearchStrategy[bytes], bad: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """``good`` nine times in ten (one_of would pick each branch as often)."""
    return st.tuples(st.integers(0, 9), good, bad).map(lambda t: t[2] if t[0] == 0 else t[1])


VALUES = _mostly(GOOD_VALUES, BAD_VALUES)
ENDINGS = st.sampled_from([b"\r\n"] * 19 + [b"\n"])
COLONS = st.sampled_from([b":", b":\t", b":  "] + [b": "] * 8 + [b" :"])
FIELD_LINES = st.lists(st.tuples(NAMES, COLONS, VALUES, ENDINGS), max_size=4)


def _field_block(lines: list[tuple[bytes, bytes, bytes, bytes]]) -> bytes:
    return b"".join(name + colon + value + end for name, colon, value, end in lines)


@settings(max_examples=600, deadline=None)
@given(
    method=st.sampled_from([b"GET"] * 4 + [b"HEAD"] * 2 + [b"POST", b"get", b"GET "]),
    target=_mostly(
        st.sampled_from([b"/", b"/a?b=c&d=%20", b"/static/x.js", b"/a/b;c=d@e~!$'()*+,"]),
        st.sampled_from([b"/x y", b"/#f", b"*", b"http://h/", b"/\xe9", b'/"', b"/{}"])
        | st.binary(max_size=10).map(lambda t: b"/" + t),
    ),
    version=st.sampled_from([b"HTTP/1.1"] * 3 + [b"HTTP/1.0"] * 2 + [b"HTTP/2.0", b"http/1.1"]),
    lines=FIELD_LINES,
    ending=ENDINGS,
    extra=st.sampled_from([b""] * 6 + [b"Content-Length: 0\r\n", b"Upgrade: h2c\r\n"]),
)
def test_a_plain_request_reads_as_llhttp_reads_it(
    method: bytes,
    target: bytes,
    version: bytes,
    lines: list[tuple[bytes, bytes, bytes, bytes]],
    ending: bytes,
    extra: bytes,
) -> None:
    data = method + b" " + target + b" " + version + b"\r\n" + extra + _field_block(lines) + ending
    plain = plain_request(data + b"GET /next HTTP/1.1\r\n", 8192, 4096, 100)
    if plain is None:
        event("left to llhttp")
        return  # llhttp's to read (or refuse)
    event("read in one pass")
    head, end = plain
    collected = _Collected()
    parser = collected.parser = httptools.HttpRequestParser(collected)
    parser.feed_data(data[:end])  # raises if llhttp would refuse what the one pass accepted
    assert collected.complete
    assert end == len(data)
    assert head.method == parser.get_method().decode()
    assert head.target.encode("latin-1") == collected.url
    assert head.version == parser.get_http_version()
    assert head.raw_headers == collected.headers
    assert head.keep_alive == collected.keep_alive


@settings(max_examples=600, deadline=None)
@given(
    status=st.sampled_from([b"200"] * 4 + [b"204", b"304", b"404", b"101", b"100", b"999", b"20"]),
    reason=st.sampled_from([b" OK"] * 4 + [b" ", b"", b" I'm a teapot", b" caf\xe9", b" a\x01b"]),
    version=st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]),
    lines=FIELD_LINES,
    length=st.sampled_from([b"Content-Length: 3\r\n"] * 4 + [b"", b"Content-Length: 0\r\n",
                            b"Content-Length: 3x\r\n", b"Transfer-Encoding: chunked\r\n"]),
    ending=ENDINGS,
)  # fmt: skip
def test_a_plain_response_reads_as_llhttp_reads_it(
    status: bytes,
    reason: bytes,
    version: bytes,
    lines: list[tuple[bytes, bytes, bytes, bytes]],
    length: bytes,
    ending: bytes,
) -> None:
    data = version + b" " + status + reason + b"\r\n" + length + _field_block(lines) + ending
    plain = plain_response(data + b"abc", 65536, 200)
    if plain is None:
        event("left to llhttp")
        return
    event("read in one pass")
    head, end, body_length = plain
    collected = _Collected()
    parser = collected.parser = httptools.HttpResponseParser(collected)
    parser.feed_data(data[:end])
    assert collected.complete
    assert end == len(data)
    assert head.status == parser.get_status_code()
    assert head.reason.encode("latin-1") == collected.reason
    assert head.headers == collected.headers
    assert head.keep_alive == collected.keep_alive
    expected = 0 if head.status in (204, 304) or b"Content-Length: 0" in data else 3
    assert body_length == expected
