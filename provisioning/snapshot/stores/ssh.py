"""A repository on another host (the standby) over SSH, with nothing but bash and coreutils there.

Every ssh command costs a session, and a session runs the user's shell start-up files (pyenv or
conda init in ~/.bashrc: half a second each, measured here). So the store keeps a few long-lived
sessions, each a ``bash -s`` reading one command line at a time from its stdin, and speaks a tiny
line protocol over them:

    put     head -c N | { cat > tmp || drain; } && mv tmp name   ->  OK | ERR
    get     wc -c < name; cat name                                ->  SIZE n + n bytes | MISSING
    list    find dir -type f                                      ->  names, then END
    delete  rm -f names                                           ->  OK

bash (unlike dash) reads a script on a pipe byte by byte, so the payload after a put line goes to
``head`` and never to the shell; ``head -c`` never reads past its count, and the pipe into cat is
always drained even when the file cannot be written, so a failed put never leaves payload bytes
to be taken for commands. All sessions share one ControlMaster connection: one handshake.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from provisioning.snapshot.errors import DestinationError
from provisioning.snapshot.stores.base import Payload, ReadStream

__all__ = ["SshStore"]

_MASTER_WAIT_SECONDS = 15.0
_SHELL_START_SECONDS = 60.0
_MAX_SESSIONS = 3
_DELETE_BATCH = 200
# How long the shared connection may take to end on SIGTERM before it is killed.
_MASTER_EXIT_SECONDS = 5.0
_END = "__DUMONT_END__"


class _BoundedReader:
    """Exactly ``size`` bytes of a session's stdout, then end of stream."""

    def __init__(self, stdout: IO[bytes], size: int) -> None:
        self._stdout = stdout
        self.left = size

    def read(self, size: int = -1, /) -> bytes:
        wanted = self.left if size < 0 else min(size, self.left)
        data = self._stdout.read(wanted) if wanted else b""
        self.left -= len(data)
        if wanted and not data:
            raise DestinationError("ssh session closed in the middle of an object")
        return data

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise OSError("stream is not seekable")

    def drain(self) -> None:
        while self.left:
            self.read(1 << 20)


class _Session:
    """One ``bash -s`` on the far side; used by one thread at a time."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.process.stdin is None or self.process.stdout is None:
            raise DestinationError("ssh session has no pipes")
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        self.send(f"echo {_END}\n".encode())
        # The far side's shell start-up files run first; a hung one must not hang us.
        ready, _, _ = select.select([self.stdout], [], [], _SHELL_START_SECONDS)
        if not ready:
            self.close()
            raise DestinationError(
                f"no shell answered within {_SHELL_START_SECONDS:.0f} s (check the remote "
                "user's shell start-up files)"
            )
        self.expect_end()

    def send(self, data: bytes | memoryview) -> None:
        try:
            self.stdin.write(data)
            self.stdin.flush()
        except OSError as exc:
            raise DestinationError(f"ssh session lost: {exc.strerror}") from exc

    def line(self) -> str:
        raw = self.stdout.readline()
        if not raw:
            raise DestinationError("ssh session closed unexpectedly")
        return raw.decode(errors="replace").rstrip("\n")

    def expect_end(self) -> list[str]:
        lines = []
        while (text := self.line()) != _END:
            lines.append(text)
        return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.stdout.close()


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
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self._all: list[_Session] = []
        self._available = threading.Semaphore(_MAX_SESSIONS)

    def describe(self) -> str:
        return f"ssh://{self.host}{self.root}"

    def _start_master(self) -> None:
        if self._master is not None:
            return
        master = subprocess.Popen(
            [*self._base, "-M", "-N", "-o", "ControlPersist=no", self.host],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _MASTER_WAIT_SECONDS
        while time.monotonic() < deadline:
            if master.poll() is not None:
                assert master.stderr is not None
                reason = master.stderr.read().decode(errors="replace").strip().splitlines()
                master.stderr.close()
                raise DestinationError(
                    f"cannot reach {self.describe()}: {reason[-1] if reason else 'ssh failed'}"
                )
            check = subprocess.run(
                [*self._base, "-O", "check", self.host], capture_output=True, check=False
            )
            if check.returncode == 0:
                self._master = master
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()
        if master.stderr is not None:
            master.stderr.close()
        raise DestinationError(f"cannot reach {self.describe()}: no SSH connection after 15 s")

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        self._available.acquire()
        try:
            with self._lock:
                self._start_master()
                session = self._idle.pop() if self._idle else None
            if session is None:
                session = _Session(
                    [*self._base, self.host, "--", "exec bash --norc --noprofile -s"]
                )
                with self._lock:
                    self._all.append(session)
            healthy = False
            try:
                yield session
                healthy = True
            finally:
                with self._lock:
                    if healthy:
                        self._idle.append(session)
                    else:  # out of step with the protocol: never reuse it
                        self._all.remove(session)
                        session.close()
        finally:
            self._available.release()

    def _quoted(self, name: str) -> str:
        return shlex.quote(f"{self.root}/{name}")

    def _simple(self, command: str) -> list[str]:
        with self._session() as session:
            session.send(f"{command}; echo {_END}\n".encode())
            return session.expect_end()

    def check_writable(self) -> None:
        probe = self._quoted(f".write-probe-{secrets.token_hex(4)}")
        root = shlex.quote(self.root)
        answer = self._simple(
            f"mkdir -p {root} 2>/dev/null && : > {probe} 2>/dev/null && rm -f {probe} "
            "&& echo OK || echo ERR"
        )
        if answer != ["OK"]:
            raise DestinationError(f"destination {self.describe()} is not writable")

    def put(self, name: str, data: Payload) -> None:
        final = self._quoted(name)
        temporary = self._quoted(f"{name}.tmp-{secrets.token_hex(4)}")
        directory = shlex.quote(os.path.dirname(f"{self.root}/{name}"))
        command = (
            f"mkdir -p {directory} 2>/dev/null; head -c {len(data)} | "
            f"{{ cat > {temporary} 2>/dev/null || {{ cat > /dev/null; false; }}; }} "
            f"&& mv -f {temporary} {final} && echo OK || {{ rm -f {temporary}; echo ERR; }}; "
            f"echo {_END}\n"
        )
        with self._session() as session:
            session.send(command.encode())
            session.send(data)
            answer = session.expect_end()
        if answer != ["OK"]:
            raise DestinationError(f"{self.describe()}: cannot write {name}")

    def _open(self, session: _Session, name: str) -> _BoundedReader:
        path = self._quoted(name)
        session.send(
            f"if [ -f {path} ] && size=$(wc -c < {path}); then echo SIZE $size; cat {path}; "
            f"else echo MISSING; fi\n".encode()
        )
        header = session.line()
        if header == "MISSING":
            raise DestinationError(f"{self.describe()}: cannot read {name}: no such object")
        return _BoundedReader(session.stdout, int(header.split()[1]))

    def get(self, name: str) -> bytes:
        with self._session() as session:
            reader = self._open(session, name)
            return reader.read()

    @contextlib.contextmanager
    def open_stream(self, name: str) -> Iterator[ReadStream]:
        with self._session() as session:
            reader = self._open(session, name)
            yield reader
            reader.drain()  # the session is reused: leave no byte of this object behind

    def list(self, prefix: str) -> list[str]:
        directory = os.path.dirname(prefix)
        start = shlex.quote(directory or ".")
        # A prefix without "/" ("config.json") names top-level objects: no walk through packs/.
        depth = "-maxdepth 1 " if prefix and not directory else ""
        lines = self._simple(
            f"cd {shlex.quote(self.root)} 2>/dev/null && "
            f"find {start} {depth}-type f ! -name '*.tmp-*' 2>/dev/null"
        )
        names = (line.removeprefix("./") for line in lines)
        return sorted(name for name in names if name.startswith(prefix))

    def delete(self, names: Iterable[str]) -> None:
        batch = [self._quoted(name) for name in names]
        for start in range(0, len(batch), _DELETE_BATCH):
            self._simple("rm -f " + " ".join(batch[start : start + _DELETE_BATCH]))

    def close(self) -> None:
        with self._lock:
            sessions, self._all, self._idle = self._all, [], []
            master, self._master = self._master, None
        for session in sessions:
            session.close()
        if master is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(master.pid, signal.SIGTERM)
            try:
                master.wait(timeout=_MASTER_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                # A master caught mid-handshake has been seen to outlive SIGTERM (CI hung here
                # for 180 s): closing must not wait on it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(master.pid, signal.SIGKILL)
                master.wait()
            if master.stderr is not None:
                master.stderr.close()
        with contextlib.suppress(OSError):
            os.rmdir(self._control_dir)
