"""The proxies of issue 19's far-away benchmark, each terminating TLS 1.3 in front of code-server.

Each is configured as an operator who wants HTTP/2 would: HAProxy with ``alpn h2,http/1.1`` (its
HTTP/2 front end carries WebSockets inside the connection, RFC 8441, and speaks HTTP/1.1 to the
backend); nginx with ``http2`` (WebSockets on HTTP/1.1 connections of their own: nginx does not do
RFC 8441); Caddy, whose HTTP/2 comes by default (Go's server in Debian's Caddy 2.6 has no RFC 8441
either); our proxy with ``--tls-cert``/``--tls-key`` (HTTP/1.1 only until issue 19 lands). They
listen on the delayed link's near address, code-server on the same address: proxy to code-server
is local, browser to proxy crosses the link.

The certificate is made in the run (ECDSA P-256, the link's address as its IP SAN). Chromium gets
its SPKI hash (``--ignore-certificate-errors-spki-list``): with ``--ignore-certificate-errors``
alone it accepts the certificate but caches nothing from the origin, and a warm load would be a
cold one again.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peers.procs import REPO_DIR, ProcessGroup
from peers.upstreams import nginx_paths, nginx_temp_paths
from tests.support.ports import free_port

__all__ = ["TLS_PROXIES", "Certificate", "Front", "make_certificate", "start_front"]

TLS_PROXIES = ("haproxy", "nginx", "caddy", "dumont")


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    combined: Path  # HAProxy's ``crt``: the chain and the key in one file
    spki_sha256: str  # base64, as --ignore-certificate-errors-spki-list takes it


def make_certificate(workdir: Path, address: str) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dumont far bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address(address))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paths = Certificate(
        cert=workdir / "far.crt",
        key=workdir / "far.key",
        combined=workdir / "far.pem",
        spki_sha256=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
    )
    paths.cert.write_bytes(cert_pem)
    paths.key.write_bytes(key_pem)
    paths.combined.write_bytes(cert_pem + key_pem)
    return paths


@dataclass(frozen=True)
class Site:
    """Where a proxy listens (``address:port``), what it forwards to, with which certificate."""

    address: str
    port: int
    upstream: str  # host:port of code-server
    tls: Certificate
    workdir: Path


def _haproxy(site: Site) -> str:
    return f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    http-reuse always
frontend fe
    bind {site.address}:{site.port} ssl crt {site.tls.combined} alpn h2,http/1.1 ssl-min-ver TLSv1.3
    default_backend be
backend be
    server cs {site.upstream}
"""


def _nginx(site: Site) -> str:
    # nginx 1.22 (Debian 12): `listen ... http2`; the `http2 on;` directive came in 1.25.1.
    return f"""{nginx_paths(site.workdir, "nginx")}worker_processes auto;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{nginx_temp_paths(site.workdir, "nginx")}    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    upstream cs {{
        server {site.upstream};
        keepalive 64;
    }}
    server {{
        listen {site.address}:{site.port} ssl http2;
        ssl_certificate {site.tls.cert};
        ssl_certificate_key {site.tls.key};
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://cs;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;  # idle WebSockets
        }}
    }}
}}
"""


def _caddy(site: Site) -> str:
    # h1 and h2 only: Caddy would also listen for HTTP/3, which Chromium is told not to use.
    return f"""{{
    admin off
    auto_https disable_redirects
    storage file_system {site.workdir}/caddy-data
    servers {{
        protocols h1 h2
    }}
}}
https://{site.address}:{site.port} {{
    bind {site.address}
    tls {site.tls.cert} {site.tls.key} {{
        protocols tls1.3
    }}
    reverse_proxy {site.upstream}
}}
"""


_CONFIGS: dict[str, tuple[Callable[[Site], str], str]] = {
    "haproxy": (_haproxy, "haproxy.cfg"),
    "nginx": (_nginx, "nginx.conf"),
    "caddy": (_caddy, "Caddyfile"),
}


def _argv(name: str, conf: Path, workdir: Path) -> list[str]:
    if name == "nginx":
        return ["nginx", "-c", str(conf), "-p", str(workdir)]
    if name == "haproxy":
        return ["haproxy", "-db", "-f", str(conf)]
    return ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]


def _dumont_argv(site: Site, standby: str) -> list[str]:
    return [
        sys.executable, "-m", "proxy",
        "--primary", f"http://{site.upstream}", "--standby", f"http://{standby}",
        "--listen", f"{site.address}:{site.port}",
        "--control-listen", f"127.0.0.1:{free_port()}",
        "--tls-cert", str(site.tls.cert), "--tls-key", str(site.tls.key),
        "--health-interval", "0.5", "--fall", "2", "--rise", "2",
    ]  # fmt: skip


@dataclass
class Front:
    name: str
    url: str
    group: ProcessGroup


def _get_json(url: str) -> dict[str, object] | None:
    """``url``'s JSON answer, the certificate unchecked (it is the run's own); None if no 200."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as resp:
            answer: dict[str, object] = json.load(resp)
            return answer
    except (OSError, ValueError):
        return None


def _wait_serving(front: Front, timeout: float = 30.0) -> None:
    """Until a request through ``front`` reaches code-server; our proxy takes the first backend
    it finds up, so for it also until that is code-server, the primary, not the standby."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        front.group.check_alive()
        health = _get_json(f"{front.url}/healthz")
        ours = _get_json(f"{front.url}/__dumont/healthz") if front.name == "dumont" else {}
        if health is not None and "status" in health and ours is not None:
            if ours.get("active", "primary") == "primary":
                return
            raise RuntimeError(f"{front.name} chose the standby at start")
        time.sleep(0.1)
    raise RuntimeError(f"{front.name} did not reach code-server within {timeout} s")


def start_front(name: str, base: Site, standby: str) -> Front:
    """``name`` listening with TLS on ``base.address`` (a free port is picked) in front of
    ``base.upstream``; ``standby`` is the second backend our proxy needs (never used here)."""
    workdir = base.workdir / name
    workdir.mkdir()
    site = Site(base.address, free_port(), base.upstream, base.tls, workdir)
    if name == "dumont":
        group = ProcessGroup(name, _dumont_argv(site, standby), workdir / "log", cwd=REPO_DIR)
    else:
        render, filename = _CONFIGS[name]
        conf = workdir / filename
        conf.write_text(render(site))
        # Caddy keeps state under HOME and the XDG dirs: keep it in the run's directory too.
        env = {key: str(workdir) for key in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}
        group = ProcessGroup(
            name, _argv(name, conf, workdir), workdir / "log", cwd=workdir, env=env
        )
    front = Front(name, f"https://{site.address}:{site.port}", group.start())
    try:
        _wait_serving(front)
    except BaseException:
        print(f"{name} did not come up; log tail:\n{group.log_tail()}", file=sys.stderr)
        group.stop()
        raise
    return front
