"""One browser connection speaking HTTP/2 (ALPN ``h2`` on the TLS listener; issue 19).

python-hyper's h2 is the state machine (frames, HPACK, windows, stream states): bytes in, events
out, bytes to send. This Protocol feeds it, turns each request into an ``H2Stream`` driven by the
same handler and exchange logic as HTTP/1.1, and sends what the streams queue: one DATA frame per
stream per round, as the windows allow, so a large download shares the connection fairly.

What one client may cost, and what ends its connection with GOAWAY (the others go on):

- streams: at most ``http2.max_concurrent_streams`` open (SETTINGS; h2 refuses more);
- a header list over ``http2.max_header_list_size`` (SETTINGS and a check here); CONTINUATION
  floods: h2 refuses a header block in more than 64 frames;
- rapid reset (CVE-2023-44487): more than ``http2.max_resets`` streams reset by the client per
  ``http2.reset_interval``. A reset stream drops its backend request at once, so the cost between
  two checks is bounded too;
- SETTINGS, PING and empty-DATA floods: more than ``http2.max_control_frames`` per interval
  (each SETTINGS and PING costs an answer; CVE-2019-9512, -9515, -9518). PRIORITY is not
  counted: Chromium flags every HEADERS with one, and h2 keeps no priority tree to churn;
- a stalled reader: response bytes waiting, with the browser's windows at zero or the socket full,
  for ``limits.send_timeout`` (the zero-window attack);
- an idle connection: no stream for ``limits.keepalive_timeout`` (``header_timeout`` before the
  first request).

Malformed requests (proxy.dataplane.h2_request) are refused per stream with a 400, or by h2 as a
connection error; nothing of them reaches a backend. Shutdown sends GOAWAY and lets the streams
already begun finish (``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection as H2State
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from proxy.validation import Rejected

from .h2_request import translate_request
from .h2_stream import H2Stream
from .messages import REFUSAL_HEADERS
from .upstream import WRITE_HIGH_WATER, WRITE_LOW_WATER

if TYPE_CHECKING:
    from proxy.config import Http2Config
    from proxy.headers import ClientFacts

    from .listener import ListenerContext

__all__ = ["H2Connection"]

log = logging.getLogger("dumont.dataplane")
access_log = logging.getLogger("aiohttp.access")  # the name operators already filter on

# RFC 7541 4.1: each field costs its name, its value and 32 bytes of overhead.
FIELD_OVERHEAD = 32
# The connection's receive window, in stream windows: a few streams can be paused (their backend
# is slow to read) without holding up the rest; memory stays bounded by it.
CONNECTION_WINDOWS = 8
MAX_WINDOW = 2**31 - 1


class H2Connection(asyncio.Protocol):
    def __init__(self, context: ListenerContext, settings: Http2Config) -> None:
        self.context = context
        self.settings = settings
        self.limits = context.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.facts: ClientFacts | None = None
        self.streams: dict[int, H2Stream] = {}
        self._sending: dict[int, H2Stream] = {}  # streams with DATA or END_STREAM to send
        self._answered_early: list[H2Stream] = []  # answered while their request still comes
        self._admitted = False
        self._closing = False
        self.draining = False
        self.writing_paused = False
        self._write_soon = False
        # deadlines: one timer, like ClientConnection's
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._served = False
        self._stalled_since = 0.0
        self._body_deadline = 0.0  # when the next request body may have stalled (0: none)
        # flood accounting over ``reset_interval``
        self._window_began = 0.0
        self._resets = 0
        self._control = 0
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=False,  # h2_request joins cookies and checks every field
            # The proxy builds response fields itself from screened heads, lowercase already.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = H2State(config=config)
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: min(settings.stream_window, MAX_WINDOW),
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSockets in streams
            },
        )
        self._handlers: dict[type[Event], Callable[[Event], None]] = {
            RequestReceived: self._request,
            DataReceived: self._data,
            StreamEnded: self._stream_ended,
            StreamReset: self._stream_reset,
            WindowUpdated: self._window_updated,
            RemoteSettingsChanged: self._control_frame,
            PingReceived: self._control_frame,
            ConnectionTerminated: self._terminated,
        }

    # ------------------------------------------------------------------ opening

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "unix"
        context = self.context
        if context.counter.admit(self.peer) is not None:
            # Over the listener's caps: HTTP/2 has no status before a stream, only GOAWAY.
            log.warning("refused an HTTP/2 connection from %s: too many open", self.peer)
            self.h2.initiate_connection()
            self.h2.close_connection(ErrorCodes.REFUSED_STREAM)
            self._closing = True
            transport.write(self.h2.data_to_send())  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        context.connections.add(self)
        context.protocols.connection_opened("h2")
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        self.h2.initiate_connection()
        window = min(self.settings.stream_window * CONNECTION_WINDOWS, MAX_WINDOW)
        if window > 65535:
            self.h2.increment_flow_control_window(window - 65535)
        self._idle_since = self._window_began = self.loop.time()
        self._write_out()
        self._arm()

    # ------------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 has queued GOAWAY with the right code: a malformed request, a flood of
            # CONTINUATION, too many streams, an oversized header list.
            log.info("HTTP/2 connection error from %s: %s", self.peer, exc)
            self._end_connection("protocol_error", None)
            return
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            if self.ending:
                return
        self._write_out()

    @property
    def ending(self) -> bool:
        """The connection is closing (a handler may have ended it: GOAWAY for a flood)."""
        return self._closing

    def _request(self, event: Event) -> None:
        assert isinstance(event, RequestReceived)
        stream_id = event.stream_id
        assert stream_id is not None
        assert event.headers is not None
        headers: list[tuple[bytes, bytes]] = list(event.headers)
        self._served = True
        if self.draining:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        size = sum(len(name) + len(value) + FIELD_OVERHEAD for name, value in headers)
        if size > self.settings.max_header_list_size:
            self._refuse(stream_id, 431, "header list too large", event.stream_ended is None)
            return
        try:
            request = translate_request(
                headers, event.stream_ended is not None, self.limits.max_url_length
            )
        except Rejected as rejected:
            log.info("%d for %s over HTTP/2: %s", rejected.status, self.peer, rejected.reason)
            self._refuse(stream_id, rejected.status, rejected.reason, event.stream_ended is None)
            return
        stream = H2Stream(self, stream_id)
        stream.head = request.head
        stream.websocket = request.websocket
        self.streams[stream_id] = stream
        if event.stream_ended is None and not request.websocket:
            self._arm_body(stream)
        self.context.protocols.request_started("h2")
        exchange = self.context.handler.start(stream, request.head)
        if not stream.response_done and not stream.reset:
            stream.exchange = exchange

    def _data(self, event: Event) -> None:
        assert isinstance(event, DataReceived)
        stream_id = event.stream_id
        assert stream_id is not None
        assert event.data is not None
        length = event.flow_controlled_length or 0
        if not event.data and event.stream_ended is None and self._empty_data():
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            self.acknowledge(stream_id, length)  # a refused stream's body: give the window back
            return
        stream.data_received(event.data, length)

    def _empty_data(self) -> bool:
        """An empty DATA frame that ends nothing costs a wake-up and carries nothing: counted
        with the control frames (CVE-2019-9518). True when the connection is ending for it."""
        self._control += 1
        return self._over("control frames", self._control, self.settings.max_control_frames)

    def _stream_ended(self, event: Event) -> None:
        assert isinstance(event, StreamEnded)
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            stream.body_complete()
            if stream.response_done:
                self._forget(stream)

    def _stream_reset(self, event: Event) -> None:
        assert isinstance(event, StreamReset)
        if event.remote_reset:
            self._resets += 1
            if self._over("resets", self._resets, self.settings.max_resets):
                return
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            self._forget(stream)
            stream.lost()

    def _window_updated(self, event: Event) -> None:
        if self._sending:
            self._schedule_write()

    def _control_frame(self, event: Event) -> None:
        self._control += 1
        if self._over("control frames", self._control, self.settings.max_control_frames):
            return
        if isinstance(event, RemoteSettingsChanged) and self._sending:
            self._schedule_write()  # a new initial window may unblock streams

    def _terminated(self, event: Event) -> None:
        # The browser sent GOAWAY. h2 sends nothing more after one (its connection state is
        # CLOSED), so the streams begun cannot finish: end the connection now.
        self._end_connection(None, None)

    def _over(self, what: str, count: int, limit: int) -> bool:
        """Whether a flood counter passed its limit (then the connection is ending)."""
        now = self.loop.time()
        if now - self._window_began >= self.settings.reset_interval:
            self._window_began = now
            self._resets = self._control = 0
            return False
        if count <= limit:
            return False
        log.warning(
            "HTTP/2 connection from %s closed: more than %d %s in %gs",
            self.peer, limit, what, self.settings.reset_interval,
        )  # fmt: skip
        self._end_connection(what.replace(" ", "_"), ErrorCodes.ENHANCE_YOUR_CALM)
        return True

    # ------------------------------------------------------------------ refusals

    def _refuse(self, stream_id: int, status: int, reason: str, more_coming: bool) -> None:
        """Answer a stream that never reached a handler (a 400 for a malformed request)."""
        body = f"{status} {reason.splitlines()[0][:200]}\n".encode()
        fields = [(b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"%d" % len(body))]  # fmt: skip
        fields += [(k.lower().encode(), v.encode()) for k, v in REFUSAL_HEADERS.items()]
        self.h2.send_headers(stream_id, fields)
        self.h2.send_data(stream_id, body, end_stream=True)
        if more_coming:
            self._reset(stream_id, ErrorCodes.NO_ERROR)  # its body is not wanted
        self._access(None, status, len(body), "-", reason)

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(ProtocolError):  # the stream or the connection is closed
            self.h2.reset_stream(stream_id, code)
        self._schedule_write()

    # ------------------------------------------------------------------ what streams call

    def acknowledge(self, stream_id: int, length: int) -> None:
        """``length`` received bytes were passed on: the browser may send that much more."""
        if length and not self._closing:
            self.h2.acknowledge_received_data(length, stream_id)
            self._schedule_write()

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        if self.ending:
            return
        self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        self._schedule_write()

    def want_to_send(self, stream: H2Stream) -> None:
        self._sending[stream.stream_id] = stream
        self._schedule_write()

    def reset_stream(self, stream: H2Stream, internal: bool) -> None:
        self._forget(stream)
        self._sending.pop(stream.stream_id, None)
        stream.lost()
        if not self._closing:
            self._reset(
                stream.stream_id, ErrorCodes.INTERNAL_ERROR if internal else ErrorCodes.CANCEL
            )

    def stream_finished(self, stream: H2Stream, status: int, sent: int) -> None:
        head = stream.head
        if self.context.access_log and head is not None:
            agent = head.first(b"user-agent") or "-"
            self._access(stream, status, sent, agent, None)
        if stream.request_complete or stream.reset:
            self._forget(stream)
        else:
            # Answered before the browser finished its request body (a refusal, a WebSocket's
            # end): once the answer is out, RST_STREAM(NO_ERROR) tells it to stop sending
            # (RFC 9113 8.1), and the stream stops counting.
            self._answered_early.append(stream)
            self._schedule_write()

    def _stop_early_streams(self) -> None:
        waiting = []
        for stream in self._answered_early:
            if stream.reset or stream.request_complete:
                self._forget(stream)
            elif stream.stream_id in self._sending:
                waiting.append(stream)  # its answer is still going out
            else:
                self._forget(stream)
                self._reset(stream.stream_id, ErrorCodes.NO_ERROR)
        self._answered_early = waiting

    def _access(
        self, stream: H2Stream | None, status: int, sent: int, agent: str, note: str | None
    ) -> None:
        if not self.context.access_log:
            return
        head = stream.head if stream is not None else None
        seconds = time.perf_counter() - stream.request_started if stream is not None else 0.0
        method, target = (head.method, head.target) if head is not None else ("-", note or "-")
        access_log.info(
            '%s "%s %s HTTP/2" %d %d %fs "%s"',
            self.peer, method, target, status, sent, seconds, agent,
        )  # fmt: skip

    def _forget(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None and not self.streams:
            self._idle_since = self.loop.time()
            if self.draining:
                self._schedule_write()  # then close, once the last bytes are out
            self._arm()

    # ------------------------------------------------------------------ writing

    def _schedule_write(self) -> None:
        if not self._write_soon and not self._closing:
            self._write_soon = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        """Send what h2 and the streams have queued: DATA while the socket takes it."""
        self._write_soon = False
        transport = self.transport
        if transport is None or self._closing:
            return
        if self._sending and not self.writing_paused:
            self._send_data()
        if self._answered_early:
            self._stop_early_streams()
        data = self.h2.data_to_send()
        if data:
            transport.write(data)
        self._note_progress()
        if self.draining and not self.streams and not self._sending:
            self.close()

    def _send_data(self) -> None:
        """Round robin, one frame per stream per round, within the windows; at most about one
        high-water mark of bytes per call, so the socket's buffer stays bounded."""
        h2 = self.h2
        sending = self._sending
        max_frame = h2.max_outbound_frame_size
        budget = WRITE_HIGH_WATER
        self._sent_any = False
        while sending and budget > 0:
            progressed = False
            for stream_id, stream in list(sending.items()):
                if stream.reset:
                    del sending[stream_id]
                    continue
                try:
                    sent = self._send_some(stream_id, stream, max_frame)
                except ProtocolError:  # closed in h2 before the proxy heard of it
                    del sending[stream_id]
                    stream.lost()
                    continue
                if sent is None:
                    continue  # the browser has not read: this stream waits, others go on
                budget -= sent
                progressed = True
            if not progressed:
                break
            self._sent_any = True
        if sending and budget <= 0:
            # More to send: after the loop has served the other connections.
            self._schedule_write()

    def _send_some(self, stream_id: int, stream: H2Stream, max_frame: int) -> int | None:
        """One DATA frame (or the END_STREAM) of ``stream``: bytes sent, None if its window is
        shut. A stream with nothing more to send leaves ``_sending``."""
        h2 = self.h2
        if stream.outbox:
            window = h2.local_flow_control_window(stream_id)
            if window <= 0:
                return None
            piece = stream.take(min(window, max_frame))
            last = stream.end_after_outbox and not stream.outbox
            h2.send_data(stream_id, piece, end_stream=last)
            if last:
                del self._sending[stream_id]
            return len(piece)
        del self._sending[stream_id]
        if stream.end_after_outbox and stream.response_started:
            h2.end_stream(stream_id)
        return 0

    _sent_any = False

    def _note_progress(self) -> None:
        """A stall is response bytes that cannot move: zero windows, or a full socket."""
        if not self._sending:
            self._stalled_since = 0.0
            return
        if self._sent_any or not self._stalled_since:
            self._stalled_since = self.loop.time()
            self._arm()
        self._sent_any = False

    def pause_writing(self) -> None:
        self.writing_paused = True
        if not self._stalled_since:
            self._stalled_since = self.loop.time()
            self._arm()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._stalled_since = 0.0
        self._schedule_write()

    # ------------------------------------------------------------------ deadlines

    def _arm(self) -> None:
        """One timer for the idle, stall and body deadlines, set to the soonest."""
        if self._closing:
            return
        limits = self.limits
        deadlines = []
        if not self.streams:
            idle = limits.keepalive_timeout if self._served else limits.header_timeout
            deadlines.append(self._idle_since + idle)
        if self._stalled_since:
            deadlines.append(self._stalled_since + limits.send_timeout)
        if self._body_deadline:
            deadlines.append(self._body_deadline)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            self._timer = self.loop.call_at(min(deadlines), self._tick)

    def _arm_body(self, stream: H2Stream) -> None:
        """A request body is coming: check it does not stall (``limits.body_timeout``)."""
        stream.body_seen = self.loop.time()
        if not self._body_deadline:
            self._body_deadline = stream.body_seen + self.limits.body_timeout
            self._arm()

    def _tick(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self.loop.time()
        limits = self.limits
        if self._stalled_since and now - self._stalled_since >= limits.send_timeout:
            log.info("cut off %s: HTTP/2 responses unread for %gs", self.peer, limits.send_timeout)
            self._end_connection("send_timeout", ErrorCodes.NO_ERROR)
            return
        if not self.streams:
            idle = limits.keepalive_timeout if self._served else limits.header_timeout
            if now - self._idle_since >= idle:
                self._end_connection(None, ErrorCodes.NO_ERROR)
                return
        if self._body_deadline and now >= self._body_deadline:
            self._check_bodies(now)
        self._arm()

    def _check_bodies(self, now: float) -> None:
        """Streams whose request body stalled for ``body_timeout`` while the proxy waited for
        it: their backend requests are dropped and they get a 408 (or a reset, once answering
        began). Without it a slow body would hold a backend connection for ever."""
        timeout = self.limits.body_timeout
        soonest = 0.0
        for stream in list(self.streams.values()):
            if stream.request_complete or stream.websocket or stream.exchange is None:
                continue
            if stream.reading_paused:
                stream.body_seen = now  # the proxy's side is slow, not the browser
            if now - stream.body_seen < timeout:
                deadline = stream.body_seen + timeout
                soonest = min(soonest, deadline) if soonest else deadline
                continue
            log.info("408 for %s over HTTP/2: request body stalled for %gs", self.peer, timeout)
            if stream.response_started:
                self.reset_stream(stream, internal=False)
                continue
            self._forget(stream)
            stream.lost()  # drops its backend request
            self._refuse(stream.stream_id, 408, f"request body stalled for {timeout:g}s", True)
        self._body_deadline = soonest

    # ------------------------------------------------------------------ the end

    def _end_connection(self, reason: str | None, code: ErrorCodes | None) -> None:
        """GOAWAY (``code``; None: h2 queued one already), then close; streams are dropped."""
        if reason is not None:
            self.context.protocols.goaway(reason)
        if code is not None:
            with contextlib.suppress(ProtocolError):  # already closed by a GOAWAY
                self.h2.close_connection(code)
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        self._drop_streams()
        self.close()

    def drain(self) -> None:
        """Shutdown: GOAWAY now; streams begun finish, then the connection closes.

        The GOAWAY is built here, not by h2: once h2 has sent one its connection state is CLOSED
        and it refuses to send the HEADERS and DATA the streams begun still owe. Streams the
        browser opens after it are refused (REFUSED_STREAM: safe to retry elsewhere)."""
        if self.draining or self._closing or self.transport is None:
            return
        self.draining = True
        pending = self.h2.data_to_send()  # anything h2 queued goes before the GOAWAY
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.h2.highest_inbound_stream_id
        goaway.error_code = ErrorCodes.NO_ERROR
        self.transport.write(pending + goaway.serialize())
        self._write_out()

    def _drop_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        self._sending.clear()
        for stream in streams:
            stream.lost()

    def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._admitted:
            self._admitted = False
            self.context.counter.release(self.peer)
        self.context.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drop_streams()
