"""Snapshot speed against peers in the same run: tar | zstd -T2 -1, restic, and ours.

    .venv/bin/python bench/snapshot.py --size 572M      # the issue's tree
    .venv/bin/python bench/snapshot.py --size 4G --tree /var/tmp/tree-4g   # kept for re-runs

The tree: incompressible "model weights" (70 % of the bytes, in files of at most 512 MiB), one
big compressible log (about 30 %), 10,000 small source files. Every tool works on the same tree,
page cache warm, one after another; times are wall clock of the whole command, CPU is user +
system time of all its processes (what the command costs whatever else runs on the machine), peak
memory is the largest resident set of any process of the command (wait4's ru_maxrss). Prints a
Markdown table.
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
from typing import ClassVar

_MIB = 1 << 20
_SOURCE_FILES = 10_000
_WEIGHT_FILE_MAX = 512 * _MIB
_SNAPSHOT = [sys.executable, "-m", "provisioning.snapshot"]
_RESTIC_ENV = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": "", "GOMAXPROCS": "2"}


@dataclass
class Run:
    seconds: float
    peak_mib: float
    cpu_seconds: float  # user + system of every process of the command: the load-free cost


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
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


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


class Tool:
    """One peer: how to make a fresh repository, create, restore, and back up again."""

    label = ""

    def __init__(self, name: str, work: Path, tree: Path) -> None:
        self.name, self.work, self.tree = name, work, tree
        self.creates: list[Run] = []
        self.restores: list[Run] = []
        self.incremental: Run | None = None

    def fresh(self) -> None:
        for leftover in self.work.glob(f"{self.name}-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()

    def round(self) -> None:
        self.fresh()
        out = self.work / f"{self.name}-out"
        self.creates.append(self.create())
        self.restores.append(self.restore(out))
        # Kept until the run ends, not deleted now: on this ext4 (no journal) a file created
        # within a minute of 10,000 deletions makes the kernel skip over every recently
        # deleted inode (recently_deleted() in ialloc.c), which tripled the next tool's
        # restore time and so depended on which tool ran after which.
        trash = self.work / "trash"
        trash.mkdir(exist_ok=True)
        out.rename(trash / f"{self.name}-{len(self.restores)}")
        for verb, done in (("create", self.creates[-1]), ("restore", self.restores[-1])):
            print(
                f"  {self.name} {verb}: {done.seconds:.2f} s, CPU {done.cpu_seconds:.2f} s, "
                f"load {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
            )

    def create(self) -> Run:
        raise NotImplementedError

    def restore(self, out: Path) -> Run:
        raise NotImplementedError

    def again(self) -> Run | None:
        return None


class Tar(Tool):
    label = "tar \\| zstd -T2 -1"

    def create(self) -> Run:
        archive = self.work / f"{self.name}-tree.tar.zst"
        return run(f"tar -C {self.tree} -cf - . | zstd -T2 -1 -q -o {archive}")

    def restore(self, out: Path) -> Run:
        out.mkdir()
        archive = self.work / f"{self.name}-tree.tar.zst"
        return run(f"zstd -T2 -dcq {archive} | tar -C {out} -xf -")


class Restic(Tool):
    label = "restic 0.14"

    def create(self) -> Run:
        repo = self.work / f"{self.name}-repo"
        run(["restic", "init", "-q", "--repo", str(repo)], _RESTIC_ENV)
        return run(["restic", "backup", "-q", "--repo", str(repo), str(self.tree)], _RESTIC_ENV)

    def restore(self, out: Path) -> Run:
        repo = str(self.work / f"{self.name}-repo")
        command = ["restic", "restore", "-q", "--repo", repo, "latest", "--target", str(out)]
        return run(command, _RESTIC_ENV)

    def again(self) -> Run:
        repo = str(self.work / f"{self.name}-repo")
        return run(["restic", "backup", "-q", "--repo", repo, str(self.tree)], _RESTIC_ENV)


class Dumont(Tool):
    label = "dumont snapshot"
    env: ClassVar[dict[str, str]] = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def create(self) -> Run:
        repo = str(self.work / f"{self.name}-repo")
        command = [*_SNAPSHOT, "create", str(self.tree), "-d", repo, "--no-progress"]
        return run(command, self.env)

    def restore(self, out: Path) -> Run:
        repo = str(self.work / f"{self.name}-repo")
        command = [*_SNAPSHOT, "restore", "latest", str(out), "-d", repo, "--no-progress"]
        result = run(command, self.env)
        check = subprocess.run(
            ["diff", "-r", "-q", str(self.tree), str(out)], capture_output=True, check=False
        )
        if check.returncode != 0:
            raise SystemExit(f"restored tree differs: {check.stdout.decode()[:500]}")
        return result

    def again(self) -> Run:
        return self.create()


def bench(
    work: Path, size: int, rounds: int, kept_tree: Path | None, only: set[str] | None = None
) -> list[tuple[str, str, str, str, str]]:
    tree = kept_tree or work / "tree"
    if tree.exists():  # a kept tree from an earlier run: same seed, same content
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    else:
        tree.mkdir(parents=True)
        total = make_tree(tree, size)
    mb = total / 1e6
    tools: list[Tool] = [
        Tar("tar", work, tree),
        Restic("restic", work, tree),
        Dumont("dumont", work, tree),
    ]
    tools = [tool for tool in tools if only is None or tool.name in only]
    # Rounds interleave the tools, so that the load of other work on the machine hits all alike;
    # each tool's best round is reported.
    for _ in range(rounds):
        for tool in tools:
            tool.round()
    one_line_change(tree)
    for tool in tools:
        tool.incremental = tool.again()

    def rate(runs: list[Run]) -> str:
        best = min(runs, key=lambda r: r.seconds)
        cpu = min(r.cpu_seconds for r in runs)
        return f"{mb / best.seconds:.0f} MB/s ({best.seconds:.2f} s, CPU {cpu:.2f} s)"

    rows = []
    for tool in tools:
        every = tool.creates + tool.restores + ([tool.incremental] if tool.incremental else [])
        second = (
            f"{tool.incremental.seconds:.2f} s (CPU {tool.incremental.cpu_seconds:.2f} s)"
            if tool.incremental
            else "n/a (whole archive)"
        )
        peak = f"{max(r.peak_mib for r in every):.0f} MiB"
        rows.append((tool.label, rate(tool.creates), rate(tool.restores), second, peak))
    stored = sum(p.stat().st_size for p in (work / "dumont-repo").rglob("*") if p.is_file())
    archive = work / "tar-tree.tar.zst"
    archived = archive.stat().st_size / 1e6 if archive.exists() else 0.0
    print(
        f"tree: {mb:.0f} MB; dumont repository {stored / 1e6:.0f} MB, tar.zst {archived:.0f} MB",
        file=sys.stderr,
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="572M", help="tree size, e.g. 572M or 4G")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument(
        "--tree",
        type=Path,
        help="generate the tree here and keep it, or reuse it if present (generating 4 GiB "
        "takes minutes)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds per tool; the best counts")
    parser.add_argument(
        "--tools",
        default="tar,restic,dumont",
        help="comma-separated subset of tar,restic,dumont (default: all three)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=args.work))
    try:
        only = set(args.tools.split(","))
        rows = bench(work, parse_size(args.size), args.rounds, args.tree, only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"| tool ({args.size} tree) | create | restore | incremental, one line changed | peak RSS |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nload average (1 min) before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} "
        f"({os.cpu_count()} cores, shared with other work); best of {args.rounds} round(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
