"""A repository on another host (the standby) over SSH, with nothing but a POSIX shell there.

One master connection is opened per store (ControlMaster) and every operation is a short command
multiplexed over it: ``cat > tmp && mv tmp name`` to put, ``cat`` to read, ``find`` to list,
``rm -f`` to delete. Opening the master costs one handshake; each command after that about a
millisecond.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from provisioning.snapshot.errors import DestinationError
from provisioning.snapshot.stores.base import IteratorReader, Payload, ReadStream, joined

__all__ = ["SshStore"]

_MASTER_WAIT_SECONDS = 15.0
_DELETE_BATCH = 200


class SshStore:
    def __init__(
        self, host: str, root: str, *, port: int | None = None, config_file: Path | None = None
    ) -> None:
        self.host = host
        self.root = root.rstrip("/") or "/"
        self._control_dir = tempfile.mkdtemp(prefix="dumont-ssh-")
        base = ["ssh", "-o", "BatchMode=yes", "-S", os.path.join(self._control_dir, "control")]
        if config_file is not None:
            base += ["-F", str(config_file)]
        if port is not None:
            base += ["-p", str(port)]
        self._base = base
        self._master: subprocess.Popen[bytes] | None = None

    def describe(self) -> str:
        return f"ssh://{self.host}{self.root}"

    def _start_master(self) -> None:
        if self._master is not None:
            return
        self._master = subprocess.Popen(
            [*self._base, "-M", "-N", "-o", "ControlPersist=no", self.host],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _MASTER_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                stderr = self._master.stderr.read() if self._master.stderr else b""
                self._master = None
                reason = stderr.decode(errors="replace").strip().splitlines()
                raise DestinationError(
                    f"cannot reach {self.describe()}: {reason[-1] if reason else 'ssh failed'}"
                )
            check = subprocess.run(
                [*self._base, "-O", "check", self.host], capture_output=True, check=False
            )
            if check.returncode == 0:
                return
            time.sleep(0.05)
        self.close()
        raise DestinationError(f"cannot reach {self.describe()}: no SSH connection after 15 s")

    def _run(self, command: str, data: bytes | None = None) -> bytes:
        self._start_master()
        result = subprocess.run(
            [*self._base, self.host, "--", command],
            input=data if data is not None else b"",
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines()
            raise DestinationError(
                f"{self.describe()}: {reason[-1] if reason else f'exit {result.returncode}'}"
            )
        return result.stdout

    def _remote(self, name: str) -> str:
        return shlex.quote(f"{self.root}/{name}")

    def check_writable(self) -> None:
        probe = self._remote(f".write-probe-{secrets.token_hex(4)}")
        root = shlex.quote(self.root)
        self._run(f"mkdir -p {root} && : > {probe} && rm -f {probe}")

    def put(self, name: str, data: Payload) -> None:
        final = self._remote(name)
        temporary = self._remote(f"{name}.tmp-{secrets.token_hex(4)}")
        directory = shlex.quote(os.path.dirname(f"{self.root}/{name}"))
        command = f"mkdir -p {directory} && cat > {temporary} && mv -f {temporary} {final}"
        self._run(command, joined(data))

    def get(self, name: str) -> bytes:
        return self._run(f"cat {self._remote(name)}")

    @contextlib.contextmanager
    def open_stream(self, name: str) -> Iterator[ReadStream]:
        self._start_master()
        process = subprocess.Popen(
            [*self._base, self.host, "--", f"cat {self._remote(name)}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None
        stdout = process.stdout
        try:
            yield IteratorReader(iter(lambda: stdout.read(1 << 20), b""))
        finally:
            process.kill()
            _, stderr = process.communicate()
        if process.returncode not in (0, -signal.SIGKILL):
            raise DestinationError(
                f"{self.describe()}: cannot read {name}: {stderr.decode().strip()}"
            )

    def list(self, prefix: str) -> list[str]:
        directory = os.path.dirname(prefix)
        start = shlex.quote(f"{self.root}/{directory}" if directory else self.root)
        listing = self._run(
            f"cd {shlex.quote(self.root)} 2>/dev/null || exit 0; "
            f"[ -e {start} ] || exit 0; find {start} -type f ! -name '*.tmp-*'"
        )
        names = []
        lead = f"{self.root}/"
        for line in listing.decode().splitlines():
            name = line.removeprefix(lead)
            if name.startswith(prefix):
                names.append(name)
        return sorted(names)

    def delete(self, names: Iterable[str]) -> None:
        batch = [self._remote(name) for name in names]
        for start in range(0, len(batch), _DELETE_BATCH):
            self._run("rm -f " + " ".join(batch[start : start + _DELETE_BATCH]))

    def close(self) -> None:
        if self._master is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._master.pid, signal.SIGTERM)
            self._master.wait()
            if self._master.stderr is not None:
                self._master.stderr.close()
            self._master = None
        with contextlib.suppress(OSError):
            os.rmdir(self._control_dir)
