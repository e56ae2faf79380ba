"""Bars against a peer measured in the same run (issue 13): ``factor`` times the peer's value.

bench/peers/report.py imports only the standard library, so it is importable here as
``bench.peers.report``; no process is started.
"""

from __future__ import annotations

from bench.peers.report import Bar, check_bars, render_bars

ROWS: dict[str, dict[str, float | str | None]] = {
    "haproxy": {"req_s": 50_000.0, "p99_ms": 2.0},
    "caddy": {"req_s": 16_000.0},
    "dumont": {"req_s": 30_000.0, "p99_ms": 4.5, "cpu_us_per_req": 25.0},
}
BARS = (
    Bar("req/s at least 0.5x HAProxy's", "req_s", ">=", "haproxy", factor=0.5),
    Bar("req/s at least 2.5x Caddy's", "req_s", ">=", "caddy", factor=2.5),
    Bar("p99 at most 2x HAProxy's (ms)", "p99_ms", "<=", "haproxy", factor=2.0),
    Bar("CPU per request at most 30 us", "cpu_us_per_req", "<=", 30.0),
    Bar("download at least 1.0x nginx's MB/s", "bulk_mb_s", ">=", "nginx"),
)


def test_a_ratio_bar_is_judged_against_factor_times_the_peer() -> None:
    results = {r["bar"]: r for r in check_bars(ROWS["dumont"], ROWS, BARS)}
    half = results["req/s at least 0.5x HAProxy's"]
    assert half == {
        "bar": "req/s at least 0.5x HAProxy's",
        "value": 30_000.0,
        "reference": 25_000.0,
        "met": True,
        "peer": "haproxy",
        "peer_value": 50_000.0,
        "factor": 0.5,
    }
    caddy = results["req/s at least 2.5x Caddy's"]
    assert (caddy["reference"], caddy["met"]) == (40_000.0, False)
    p99 = results["p99 at most 2x HAProxy's (ms)"]
    assert (p99["reference"], p99["met"]) == (4.0, False)


def test_a_numeric_bar_keeps_its_number() -> None:
    results = {r["bar"]: r for r in check_bars(ROWS["dumont"], ROWS, BARS)}
    cpu = results["CPU per request at most 30 us"]
    assert (cpu["reference"], cpu["met"]) == (30.0, True)
    assert "peer" not in cpu


def test_a_bar_against_a_peer_that_did_not_run_is_not_judged() -> None:
    results = {r["bar"]: r for r in check_bars(ROWS["dumont"], ROWS, BARS)}
    nginx = results["download at least 1.0x nginx's MB/s"]
    assert nginx["met"] is None
    assert nginx["reference"] is None
    assert nginx["peer_value"] is None


def test_render_shows_how_the_threshold_came_about() -> None:
    text = render_bars(check_bars(ROWS["dumont"], ROWS, BARS))
    assert (
        "  MET  req/s at least 0.5x HAProxy's: 30,000 (bar: 0.5 x haproxy's 50,000 = 25,000)"
        in text
    )
    assert "  MISS req/s at least 2.5x Caddy's: 30,000 (bar: 2.5 x caddy's 16,000 = 40,000)" in text
    assert "  MET  CPU per request at most 30 us: 25 (bar: 30)" in text
    assert "  n/a  download at least 1.0x nginx's MB/s: - (bar: 1 x nginx's - = -)" in text
