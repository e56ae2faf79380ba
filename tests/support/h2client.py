"""An HTTP/2 client for tests: python-hyper's h2 on an asyncio TLS connection (ALPN h2).

With ``validate=False`` h2 sends header lists as given (uppercase names, CR/LF, connection
fields, pseudo-headers anywhere): what an attacker's client would send. ``send_raw`` writes
hand-built frames (hyperframe) for what h2 will not produce at all (CONTINUATION floods).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from hpack import Encoder, NeverIndexedHeaderTuple

from proxy.config import TLSConfig

__all__ = [
    "H2Client",
    "Reply",
    "certificate",
    "header_block",
    "make_certificate",
    "tls_settings",
]

Fields = list[tuple[bytes, bytes]]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made once per test run."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


def tls_settings(certificate: tuple[Path, Path]) -> TLSConfig:
    """The ``tls`` override that makes an in-process proxy serve HTTPS (and so HTTP/2)."""
    cert, key = certificate
    return TLSConfig(cert=str(cert), key=str(key))


def make_certificate(where: Path) -> tuple[Path, Path]:
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def header_block(fields: Fields) -> bytes:
    """An HPACK block of literal, never-indexed fields: it leaves the server's dynamic table as
    it was, so hand-built frames can go beside the h2 client's own on one connection."""
    return Encoder().encode([NeverIndexedHeaderTuple(name, value) for name, value in fields])


@dataclass
class Reply:
    status: int = 0
    headers: Fields = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, when the server reset the stream

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: H2Connection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.replies: dict[int, Reply] = {}
        self.goaway: int | None = None  # the server's GOAWAY error code
        self.closed = False
        self.settings_seen = False
        self._frames = bytearray()  # frame bytes not yet whole (see _without_goaway)
        self.auto_ack = True  # give windows back as data arrives
        # Streams whose own window is never given back (a reader that stopped reading): only
        # the connection's window is, so the other streams keep flowing.
        self.hold: set[int] = set()

    @classmethod
    async def open(cls, port: int, *, validate: bool = True, window: int | None = None) -> H2Client:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=True,
        )
        conn = H2Connection(config=config)
        conn.initiate_connection()
        if window is not None:
            conn.update_settings({4: window})  # SETTINGS_INITIAL_WINDOW_SIZE
        client = cls(reader, writer, conn)
        await client.flush()
        await client.wait_for(lambda: client.settings_seen, 10)  # the server's SETTINGS
        return client

    @staticmethod
    def request_fields(path: str = "/", method: str = "GET", host: str = "ide.test") -> Fields:
        return [(b":method", method.encode()), (b":scheme", b"https"),
                (b":authority", host.encode()), (b":path", path.encode())]  # fmt: skip

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def start(self, fields: Fields, body: bytes | None = None, end: bool = True) -> int:
        """Open a stream; a ``body`` must fit the windows (``send_body`` waits for them)."""
        stream_id = self.conn.get_next_available_stream_id()
        self.replies[stream_id] = Reply()
        self.conn.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        return stream_id

    async def send_body(self, stream_id: int, body: bytes, end: bool = True) -> None:
        """Send ``body`` as the windows allow, reading (window updates) while they are shut."""
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                await self.flush()
                await self.read_once()
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
        if end:
            self.conn.end_stream(stream_id)
        await self.flush()

    async def request(
        self, fields: Fields, body: bytes | None = None, timeout: float = 10.0
    ) -> Reply:
        stream_id = self.start(fields, None if body is None else b"", end=body is None)
        if body is not None:
            await self.send_body(stream_id, body)
        await self.flush()
        await self.wait_for(lambda: self.done(stream_id), timeout)
        return self.replies[stream_id]

    def done(self, stream_id: int) -> bool:
        reply = self.replies[stream_id]
        return reply.ended or reply.reset is not None or self.closed

    async def wait_for(self, condition: object, timeout: float = 10.0) -> None:
        assert callable(condition)
        async with asyncio.timeout(timeout):
            while not condition():
                if self.closed:
                    raise ConnectionError("the server closed the connection")
                await self.read_once()

    async def read_once(self) -> None:
        if self.closed:
            return
        data = await self.reader.read(65536)
        if not data:
            self.closed = True
            return
        try:
            events = self.conn.receive_data(self._without_goaway(data))
        except ProtocolError:
            self.closed = True
            return
        for event in events:
            self._event(event)
        await self.flush()

    def _without_goaway(self, data: bytes) -> bytes:
        """The bytes for h2, GOAWAY frames taken out and noted in ``goaway``.

        A graceful GOAWAY lets streams already begun finish (RFC 9113 6.8), but h2's state
        machine, once it has seen one, refuses every frame after it; browsers do not."""
        self._frames += data
        out = bytearray()
        while len(self._frames) >= 9:
            length = int.from_bytes(self._frames[:3], "big")
            if len(self._frames) < 9 + length:
                break
            frame, self._frames = self._frames[: 9 + length], self._frames[9 + length :]
            if frame[3] == 0x7:  # GOAWAY: last stream id (4 bytes), error code (4 bytes)
                self.goaway = int.from_bytes(frame[13:17], "big")
            else:
                out += frame
        return bytes(out)

    def _event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            reply = self.replies.setdefault(event.stream_id or 0, Reply())
            headers: Fields = list(event.headers or [])
            reply.headers = headers
            reply.status = int(dict(headers)[b":status"])
        elif isinstance(event, DataReceived):
            reply = self.replies.setdefault(event.stream_id or 0, Reply())
            reply.body += event.data or b""
            length = event.flow_controlled_length
            if self.auto_ack and length:
                if event.stream_id in self.hold:
                    self.conn.increment_flow_control_window(length)
                else:
                    self.conn.acknowledge_received_data(length, event.stream_id or 0)
        elif isinstance(event, StreamEnded):
            self.replies.setdefault(event.stream_id or 0, Reply()).ended = True
        elif isinstance(event, StreamReset):
            self.replies.setdefault(event.stream_id or 0, Reply()).reset = int(
                event.error_code or 0
            )
        elif isinstance(event, RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(event, ConnectionTerminated):
            self.goaway = int(event.error_code or 0)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Read until the server closes the connection (True) or ``timeout`` passes (False)."""
        try:
            await self.wait_for(lambda: self.closed, timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
