"""Building and running the Dockerfile without a Docker engine: buildah, chroot isolation (issue 8).

Everything here is started so that it can be ended by id: images and containers by their names,
processes by process group, and processes that a chroot run left behind by their root directory.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BASE_IMAGE_SCRIPT = REPO / "scripts" / "make-base-image.sh"


def run(argv: Sequence[str], timeout: float = 120, check: bool = True) -> str:
    """Run a short command; its stdout, or an AssertionError that shows what it printed."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, start_new_session=True
    )
    if check and proc.returncode != 0:
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        raise AssertionError(f"{shlex.join(argv)} exited {proc.returncode}\n{output}")
    return proc.stdout


def image_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["buildah", "inspect", "--type", "image", name], capture_output=True, check=False
        ).returncode
        == 0
    )


def inspect_image(name: str) -> dict[str, Any]:
    return json.loads(run(["buildah", "inspect", "--type", "image", name]))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------- pip in the build stage


def _pip_config_files(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME", "/root"))
    xdg_dirs = env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    candidates = [
        Path("/etc/pip.conf"),
        *(Path(d) / "pip" / "pip.conf" for d in xdg_dirs),
        home / ".config" / "pip" / "pip.conf",
        home / ".pip" / "pip.conf",
    ]
    if env.get("PIP_CONFIG_FILE"):
        candidates.append(Path(env["PIP_CONFIG_FILE"]))
    return [p for p in dict.fromkeys(candidates) if p.is_file()]


def _local_paths(value: str) -> Iterator[Path]:
    for token in value.split():
        path = Path(token.removeprefix("file://"))
        # A local PEP 503 index ("/x/simple") links to its files beside it ("../files/..."): the
        # whole index root must be there.
        if token.startswith("file://") and path.name == "simple":
            path = path.parent
        if path.is_absolute() and path.exists():
            yield path


def pip_passthrough(env: Mapping[str, str] = os.environ) -> tuple[list[str], list[str]]:
    """``--build-arg`` and ``--volume`` options that give pip in the build this machine's pip setup.

    This machine's index, CA bundle, local wheel directories and constraints are whatever its pip
    configuration says, read now: the configuration files are mounted at the same paths, and so is
    every local file or directory they (or PIP_* variables) name. PIP_* variables are passed as
    build arguments where the Dockerfile declares them. Nothing of it reaches the final image.
    """
    files = _pip_config_files(env)
    values: list[str] = [v for k, v in env.items() if k.startswith("PIP_")]
    for path in files:
        parser = configparser.RawConfigParser(strict=False)
        with contextlib.suppress(configparser.Error):
            parser.read(path)
        values += [v for section in parser.sections() for v in parser[section].values()]
    mounts = dict.fromkeys([*files, *(p for v in values for p in _local_paths(v))])
    volumes = [opt for p in mounts for opt in ("--volume", f"{p}:{p}:ro")]
    declared = set(re.findall(r"^ARG (PIP_\w+)", DOCKERFILE.read_text(), flags=re.M))
    build_args = [
        opt for k in sorted(declared & env.keys()) for opt in ("--build-arg", f"{k}={env[k]}")
    ]
    return build_args, volumes


def pip_run_environment(env: Mapping[str, str] = os.environ) -> tuple[dict[str, str], list[str]]:
    """The same pip setup for a ``buildah run``: every PIP_* variable, and the same mounts."""
    _build_args, volumes = pip_passthrough(env)
    mounts = [v for v in volumes if v != "--volume"]
    return {k: v for k, v in env.items() if k.startswith("PIP_")}, mounts


def build_image(tag: str, base_image: str, log: Path, timeout: float = 600) -> None:
    build_args, volumes = pip_passthrough()
    argv = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--pull=never",
        "--layers=false",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        "VERSION=test",
        *build_args,
        *volumes,
        "--tag",
        tag,
        "--file",
        str(DOCKERFILE),
        str(REPO),
    ]
    with log.open("w") as out:
        proc = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(
            f"buildah bud exited {proc.returncode}:\n"
            + "\n".join(log.read_text().splitlines()[-40:])
        )


# ------------------------------------------------------------------------ working containers


@dataclass
class Container:
    """A buildah working container; ``run`` processes live in chroots below its mount point."""

    name: str
    mountpoint: Path

    @classmethod
    def create(cls, image: str) -> Container:
        name = run(["buildah", "from", "--pull=never", image]).strip().splitlines()[-1]
        mountpoint = Path(run(["buildah", "mount", name]).strip())
        return cls(name, mountpoint)

    def run_argv(
        self, command: Sequence[str], env: Mapping[str, str] = {}, volumes: Sequence[str] = ()
    ) -> list[str]:
        opts = [o for k, v in env.items() for o in ("--env", f"{k}={v}")]
        opts += [o for v in volumes for o in ("--volume", v)]
        return ["buildah", "run", "--isolation", "chroot", *opts, self.name, "--", *command]

    def run(
        self,
        command: Sequence[str],
        env: Mapping[str, str] = {},
        timeout: float = 60,
        check: bool = True,
        volumes: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.run_argv(command, env, volumes),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{command} in {self.name} exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        return proc

    def processes(self) -> list[int]:
        """Pids of the processes running in this container, found by their file system.

        ``buildah run`` chroots into a mount of its own (not the ``buildah mount`` point), in a
        mount namespace of its own, but that mount's upper layer is this container's: a process
        whose root is not the host's and whose mounts name that layer is one of ours.
        """
        upper = f"upperdir={self.mountpoint.parent}/diff,"
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                chrooted = os.readlink(entry / "root") != "/"
                if chrooted and upper in (entry / "mountinfo").read_text():
                    pids.append(int(entry.name))
        return pids

    def entrypoints(self) -> list[int]:
        """The commands that ``buildah run`` started: children of its in-container chroot helper
        (``buildah-chroot-exec``), the processes `docker stop` would signal."""
        pids = self.processes()
        helpers = [p for p in pids if parent_of(p) not in pids]
        return [p for p in pids if parent_of(p) in helpers]

    def remove(self) -> None:
        for _ in range(50):  # a chroot run's processes outlive `buildah run` if it was killed
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        run(["buildah", "umount", self.name], check=False)
        run(["buildah", "rm", self.name], check=False)


def parent_of(pid: int) -> int:
    with contextlib.suppress(OSError):
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    return 0


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")
