"""The manifest's hand-written JSON lines are exactly what json.dumps would write, and read back."""

from __future__ import annotations

import json
import os

from provisioning.snapshot.manifest import Entry, decode_manifest, encode_manifest

_ENTRIES = [
    Entry(
        'src/ünï 🚀/quote"back\\slash\nnewline\u2028.py',
        "file",
        0o4755,
        1_764_300_000_123_456_789,
        1000,
        1001,
        5_000_000,
        "ab" * 32,
        ("cd" * 32, "ef" * 32),
        inode=123_456,
        ctime_ns=1_764_300_000_987_654_321,
    ),
    Entry(os.fsdecode(b"caf\xe9-latin1.txt"), "file", 0o600, 1, size=0, hash="e", chunks=("e",)),
    Entry("empty-dir", "dir", 0o755, 5, 0, 0),
    Entry("dangling", "symlink", 0o777, 6, target="../does/not\texist"),
    Entry("twin", "hardlink", 0o644, 7, target='src/ünï 🚀/quote"back\\slash\nnewline\u2028.py'),
]


def test_lines_match_json_dumps() -> None:
    for entry in _ENTRIES:
        assert entry.to_line() == json.dumps(entry.to_json(), separators=(",", ":"))


def test_round_trip() -> None:
    data = encode_manifest(_ENTRIES)
    assert data.count(b"\n") == len(_ENTRIES)
    assert data.isascii()
    assert decode_manifest(data) == _ENTRIES
    # Lines written one json.dumps each (older snapshots) read the same.
    older = "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in _ENTRIES)
    assert decode_manifest(older.encode("ascii")) == _ENTRIES
