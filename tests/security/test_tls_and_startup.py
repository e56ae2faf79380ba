"""TLS termination with optional HSTS, and the start-up refusals (one line, exit status 2)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import REPO, Proc, start_proxy
from tests.support.rawnet import CountingUpstream, connect, read_until_closed, status_of


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _argv(upstream: CountingUpstream, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "proxy",
        "--primary", f"http://127.0.0.1:{upstream.port}",
        "--standby", f"http://localhost:{upstream.port}",
        "--listen", f"127.0.0.1:{port}", "--control-listen", f"127.0.0.1:{free_port()}",
        "--log-level", "warning", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def https_proxy(
    upstream: CountingUpstream, certificate: tuple[Path, Path]
) -> Iterator[tuple[int, ssl.SSLContext]]:
    cert, key = certificate
    port = free_port()
    argv = _argv(upstream, port, "--tls-cert", str(cert), "--tls-key", str(key))
    argv += ["--limits-header-timeout", "2"]
    popen = subprocess.Popen(
        [*argv, "--tls-hsts", "600"], cwd=REPO, start_new_session=True, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    proc = Proc(popen, port)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 20
        health = f"https://127.0.0.1:{port}/__dumont/healthz"
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(health, context=trust, timeout=1),
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the HTTPS proxy did not start")
        yield port, trust
    finally:
        proc.stop()


def test_https_is_terminated_and_forwarded_with_hsts(
    https_proxy: tuple[int, ssl.SSLContext], upstream: CountingUpstream
) -> None:
    port, trust = https_proxy
    url = f"https://127.0.0.1:{port}/c-over-tls"
    with urllib.request.urlopen(url, context=trust, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"] == "max-age=600"
    [seen] = upstream.requests("/c-over-tls")
    assert ("X-Forwarded-Proto", "https") in seen.headers


def test_limits_apply_over_tls_too(https_proxy: tuple[int, ssl.SSLContext]) -> None:
    port, trust = https_proxy
    with connect(port) as raw, trust.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /c-tls-smuggle HTTP/1.1\r\nHost: ide.test\r\nContent-Length: 1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")  # fmt: skip
        assert status_of(read_until_closed(tls, 5)) == 400


def test_plain_http_on_the_https_port_gets_no_http_answer(
    https_proxy: tuple[int, ssl.SSLContext],
) -> None:
    port, _ = https_proxy
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ide.test\r\n\r\n")
        assert status_of(read_until_closed(sock, 5)) == 0


def test_unfinished_tls_handshake_is_dropped_after_the_head_timeout(
    https_proxy: tuple[int, ssl.SSLContext],
) -> None:
    port, _ = https_proxy
    with connect(port) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        started = time.monotonic()
        assert not read_until_closed(sock, 10).endswith(b"<open>")
        assert time.monotonic() - started < 9  # 2 s here; asyncio's default would be 60 s


def _refused(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=30, start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_certificate_without_key_is_one_config_error(
    upstream: CountingUpstream, certificate: tuple[Path, Path]
) -> None:
    line = _refused(_argv(upstream, free_port(), "--tls-cert", str(certificate[0])))
    assert "tls.key" in line


def test_unloadable_certificate_stops_start_up(
    upstream: CountingUpstream, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    line = _refused(_argv(upstream, free_port(), "--tls-cert", str(bogus), "--tls-key", str(bogus)))
    assert "tls.cert" in line


def test_pure_python_parser_is_refused_unless_allowed(upstream: CountingUpstream) -> None:
    line = _refused(_argv(upstream, free_port()), env={"AIOHTTP_NO_EXTENSIONS": "1"})
    assert "allow_python_parser" in line
    assert "C HTTP parser" in line
    proc = start_proxy(
        f"http://127.0.0.1:{upstream.port}",
        f"http://localhost:{upstream.port}",
        "--allow-python-parser",
        "true",
        "--log-level",
        "error",
        env={"AIOHTTP_NO_EXTENSIONS": "1"},
    )
    try:
        with socket.create_connection(("127.0.0.1", proc.port), 5) as sock:
            sock.sendall(b"GET /c-python-parser HTTP/1.1\r\nHost: ide.test\r\n\r\n")
            assert status_of(read_until_closed(sock, 5)) == 200
    finally:
        proc.stop()
