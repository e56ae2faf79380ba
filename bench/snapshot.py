"""Snapshot speed against peers in the same run: tar | zstd -T2 -1, restic, and ours.

    .venv/bin/python bench/snapshot.py --size 572M      # the issue's tree
    .venv/bin/python bench/snapshot.py --size 4G        # the 4 GiB tree

The tree: incompressible "model weights" (70 % of the bytes, in files of at most 512 MiB), one
big compressible log (about 30 %), 10,000 small source files. Every tool works on the same tree,
page cache warm, one after another; times are wall clock of the whole command, peak memory is
the largest resident set of any process of the command (wait4's ru_maxrss). Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_MIB = 1 << 20
_SOURCE_FILES = 10_000
_WEIGHT_FILE_MAX = 512 * _MIB
_SNAPSHOT = [sys.executable, "-m", "provisioning.snapshot"]
_RESTIC_ENV = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": "", "GOMAXPROCS": "2"}


@dataclass
class Run:
    seconds: float
    peak_mib: float


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def run(
    command: list[str] | str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Run:
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        shell=isinstance(command, str),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command!r} failed: {stderr.strip()}")
    return Run(seconds, usage.ru_maxrss / 1024)


def make_tree(root: Path, total: int) -> int:
    """Returns the byte count actually written."""
    rng = random.Random(9)
    weights = int(total * 0.70)
    log_size = int(total * 0.30) - 2 * _MIB
    shard = 0
    while weights > 0:
        size = min(weights, _WEIGHT_FILE_MAX)
        path = root / "models" / f"model-{shard:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            left = size
            while left:
                piece = min(left, 16 * _MIB)
                out.write(os.urandom(piece))
                left -= piece
        weights -= size
        shard += 1
    words = ["import", "def", "return", "self", "value", "tensor", "batch", "loss", "for", "in"]
    for number in range(_SOURCE_FILES):
        path = root / "src" / f"pkg{number % 50:02d}" / f"module_{number:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choices(words, k=8)) for _ in range(rng.randint(1, 8))]
        path.write_text(f"# module {number}\n" + "\n".join(lines) + "\n")
    (root / "logs").mkdir()
    with (root / "logs" / "train.log").open("wb") as log:
        step = 0
        written = 0
        while written < log_size:
            block = "".join(
                f"2026-11-28T{(step + i) // 3600 % 24:02d}:{(step + i) // 60 % 60:02d}:"
                f"{(step + i) % 60:02d} step={step + i} loss={rng.random():.6f} "
                f"lr={rng.random() * 1e-3:.3e} tokens/s={rng.randint(1000, 99999)}\n"
                for i in range(4096)
            ).encode()
            log.write(block)
            written += len(block)
            step += 4096
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def one_line_change(tree: Path) -> None:
    target = tree / "src" / "pkg07" / "module_00007.py"
    with target.open("a") as out:
        out.write("print('one more line')\n")


def bench(work: Path, size: int) -> list[tuple[str, str, str, str, str]]:
    tree = work / "tree"
    tree.mkdir()
    total = make_tree(tree, size)
    mb = total / 1e6
    rows: list[tuple[str, str, str, str, str]] = []

    def rate(r: Run) -> str:
        return f"{mb / r.seconds:.0f} MB/s ({r.seconds:.2f} s)"

    archive = work / "tree.tar.zst"
    create = run(f"tar -C {tree} -cf - . | zstd -T2 -1 -q -o {archive}")
    out = work / "tar-out"
    out.mkdir()
    restore = run(f"zstd -T2 -dcq {archive} | tar -C {out} -xf -")
    rows.append(
        (
            "tar | zstd -T2 -1",
            rate(create),
            rate(restore),
            "n/a (full archive again)",
            f"{max(create.peak_mib, restore.peak_mib):.0f} MiB",
        )
    )
    shutil.rmtree(out)

    repo = work / "restic-repo"
    run(["restic", "init", "-q", "--repo", str(repo)], _RESTIC_ENV)
    create = run(["restic", "backup", "-q", "--repo", str(repo), str(tree)], _RESTIC_ENV)
    one_line_change(tree)
    second = run(["restic", "backup", "-q", "--repo", str(repo), str(tree)], _RESTIC_ENV)
    out = work / "restic-out"
    restore = run(
        ["restic", "restore", "-q", "--repo", str(repo), "latest", "--target", str(out)],
        _RESTIC_ENV,
    )
    rows.append(
        (
            "restic 0.14",
            rate(create),
            rate(restore),
            f"{second.seconds:.2f} s",
            f"{max(create.peak_mib, restore.peak_mib, second.peak_mib):.0f} MiB",
        )
    )
    shutil.rmtree(out)
    shutil.rmtree(repo)

    repo = work / "dumont-repo"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    create = run([*_SNAPSHOT, "create", str(tree), "-d", str(repo), "--no-progress"], env)
    one_line_change(tree)
    second = run([*_SNAPSHOT, "create", str(tree), "-d", str(repo), "--no-progress"], env)
    out = work / "dumont-out"
    restore = run(
        [*_SNAPSHOT, "restore", "latest", str(out), "-d", str(repo), "--no-progress"], env
    )
    check = subprocess.run(
        ["diff", "-r", "-q", str(tree), str(out)], capture_output=True, check=False
    )
    if check.returncode != 0:
        raise SystemExit(f"restored tree differs: {check.stdout.decode()[:500]}")
    rows.append(
        (
            "dumont snapshot",
            rate(create),
            rate(restore),
            f"{second.seconds:.2f} s",
            f"{max(create.peak_mib, restore.peak_mib, second.peak_mib):.0f} MiB",
        )
    )
    stored = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    print(
        f"tree: {mb:.0f} MB; dumont repository {stored / 1e6:.0f} MB, "
        f"tar.zst {archive.stat().st_size / 1e6:.0f} MB",
        file=sys.stderr,
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="572M", help="tree size, e.g. 572M or 4G")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=args.work))
    try:
        rows = bench(work, parse_size(args.size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"| tool ({args.size} tree) | create | restore | incremental, one line changed | peak RSS |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
