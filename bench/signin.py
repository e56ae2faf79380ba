#!/usr/bin/env python3
"""What sign-in costs the data plane per request (issue 17: at most ~5 us of CPU).

Two measurements in one run:

- the gate alone, in-process: ``SignInGate.refusal`` on a browser-like request head (a dozen
  fields, code-server's cookie next to ours), for a session already opened (the steady state: the
  cache per cookie value) and for a cookie seen for the first time (AES-GCM + JSON);
- end to end: two proxy processes in front of one nginx origin, ``auth.mode = "none"`` and
  ``"oidc"`` with a valid session cookie, wrk sending the same browser-like headers to both,
  alternated ``--runs`` times; the difference of 1/req_s is the added time per request on the
  proxy's one core (the issuer is never contacted: a valid session needs no I/O).

Usage: ``.venv/bin/python bench/signin.py [--seconds S] [--runs N]``.
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from types import SimpleNamespace

from peers.procs import ProcessGroup, stopping, wait_http
from peers.upstreams import SMALL_PATH, make_docroot, start_nginx_origin

from proxy.auth.gate import SignInGate
from proxy.auth.metrics import AuthMetrics
from proxy.auth.seal import Sealer, read_keys
from proxy.auth.sessions import SessionBook
from proxy.config import workspace_setting
from proxy.dataplane.messages import RequestHead
from proxy.workspaces.hosts import HostTable
from proxy.workspaces.spec import parse_workspace
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def browser_headers(cookie: str) -> list[tuple[str, str]]:
    return [
        ("Host", "alice.ide.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari"),
        ("Accept", "*/*"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Dest", "empty"),
        ("Referer", "https://alice.ide.example.com/?folder=/home/alice/project"),
        ("Cookie", f"code-server-session=%24argon2id%24v%3D19%24{'x' * 90}; {cookie}"),
        ("Connection", "keep-alive"),
    ]


def gate_alone(keys: Path) -> dict[str, float]:
    book = SessionBook(Sealer(read_keys("k", str(keys))), 3600.0, None)
    _, value = book.issue("alice@example.com", frozenset({"dev"}), "alice.ide.example.com")
    # Sites.for_host as it is: the real Host table's memoised lookup, then the Site by name.
    spec = parse_workspace(
        "alice",
        {"hosts": ["alice.ide.example.com"], "primary": "http://10.0.0.1:1",
         "standby": "http://10.0.0.2:1", "owners": ["alice@example.com"]},
        workspace_setting,
    )  # fmt: skip
    table, by_name = HostTable([spec]), {"alice": SimpleNamespace(spec=spec)}

    def for_host(raw: bytes | str | None) -> object:
        name = table.lookup(raw)
        return None if name is None else by_name.get(name)

    gate = SignInGate(SimpleNamespace(for_host=for_host), book, AuthMetrics())  # type: ignore[arg-type]
    raw = [(n.encode(), v.encode()) for n, v in browser_headers(f"dumont_session={value}")]

    def fresh() -> RequestHead:
        # A head per call: the gate takes the cookie out of the head it lets through, and the
        # same head again would be measured as a refusal (no session) from the second call on.
        # New bytes too, as the parser makes: a bytes object caches its hash, and the gate looks
        # the Cookie field up by value.
        fields = [(name, bytes(memoryview(value))) for name, value in raw]
        return RequestHead("GET", "/stable-x/static/out/vs/workbench.js", "1.1", fields, True)

    assert gate.refusal(fresh(), "alice.ide.example.com") is None
    n = 100_000
    both = min(
        timeit.repeat(lambda: gate.refusal(fresh(), "alice.ide.example.com"), number=n, repeat=5)
    )
    hit = both - min(timeit.repeat(fresh, number=n, repeat=5))
    first = min(
        timeit.repeat(lambda: book._unseal(value), number=20_000, repeat=5)  # noqa: SLF001
    )
    return {"cached_us": hit / n * 1e6, "first_open_us": first / 20_000 * 1e6}


def start_dumont(
    tag: str, origin: int, workdir: Path, env: dict[str, str]
) -> tuple[ProcessGroup, int]:
    port = free_port()
    argv = [
        sys.executable, "-m", "proxy", "--primary", f"http://127.0.0.1:{origin}",
        "--standby", f"http://localhost:{origin}", "--listen", f"127.0.0.1:{port}",
        "--control-listen", f"127.0.0.1:{free_port()}", "--health-warmup-path", "",
    ]  # fmt: skip
    group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=REPO, env=env).start()
    wait_http(f"http://127.0.0.1:{port}/__dumont/healthz", timeout=20, watch=group.check_alive)
    time.sleep(2.0)  # the first health checks pick the primary
    return group, port


def wrk(port: int, headers: list[tuple[str, str]], seconds: int) -> float:
    argv = ["wrk", "-t1", "-c32", f"-d{seconds}s"]
    for name, value in headers:
        if name not in ("Host", "Connection"):
            argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://127.0.0.1:{port}{SMALL_PATH}")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw refusals:\n{out}")
    found = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    assert found is not None, out
    return float(found[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dumont-signin-bench-") as tmp:
        workdir = Path(tmp)
        keys = workdir / "cookie-keys"
        keys.write_text(secrets.token_hex(32) + "\n")
        alone = gate_alone(keys)
        print(
            f"gate alone: {alone['cached_us']:.2f} us per request with an opened session,"
            f" {alone['first_open_us']:.1f} us to open a cookie seen for the first time"
        )
        oidc_env = {
            "DUMONT_AUTH_MODE": "oidc", "DUMONT_AUTH_ISSUER": "http://127.0.0.1:9",
            "DUMONT_AUTH_CLIENT_ID": "bench", "DUMONT_AUTH_CLIENT_SECRET": "bench",
            "DUMONT_AUTH_ALLOWED_EMAILS": "alice@example.com",
            "DUMONT_AUTH_COOKIE_KEYS_FILE": str(keys),
        }  # fmt: skip
        with stopping([]) as groups:
            origin_group, origin = start_nginx_origin(workdir, make_docroot(workdir, 1))
            groups.append(origin_group)
            plain, plain_port = start_dumont("none", origin, workdir, {})
            groups.append(plain)
            gated, gated_port = start_dumont("oidc", origin, workdir, oidc_env)
            groups.append(gated)
            # wrk sends Host: 127.0.0.1:PORT; a session works only at the Host it was issued at.
            book = SessionBook(Sealer(read_keys("k", str(keys))), 3600.0, None)
            _, value = book.issue("alice@example.com", frozenset(), f"127.0.0.1:{gated_port}")
            headers = browser_headers(f"dumont_session={value}")
            rates: dict[str, list[float]] = {"none": [], "oidc": []}
            for _ in range(args.runs):
                rates["none"].append(wrk(plain_port, headers, args.seconds))
                rates["oidc"].append(wrk(gated_port, headers, args.seconds))
        none, oidc = (statistics.median(rates[k]) for k in ("none", "oidc"))
        print(f"wrk -t1 -c32, {args.runs} alternated runs of {args.seconds} s, medians:")
        print(f"  auth none: {none:9.0f} req/s  {1e6 / none:6.2f} us/request  {rates['none']}")
        print(f"  auth oidc: {oidc:9.0f} req/s  {1e6 / oidc:6.2f} us/request  {rates['oidc']}")
        print(f"  difference: {1e6 / oidc - 1e6 / none:+.2f} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
