"""A private `redis-server` for the tests (as bench/baoserver.py is for OpenBao): one implementation
for the session server and the per-test servers of tests/conftest.py, and for the replica fleets of
tests/replicas.py.

It listens on a free loopback port and keeps its files in a folder of the caller's. `start()` after
`stop()` comes back on the same port and folder; with an append-only file (`appendfsync`) it comes
back with its data. `proc` is the process, for tests that freeze it (SIGSTOP/SIGCONT).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pytest
from support import free_port

from bench.baoserver import stop_process

AppendFsync = Literal["always", "everysec", "no"]


class RedisServer:
    """`appendfsync=None` (and no `save`): no persistence at all, the data goes with the process. Otherwise
    an append-only file, fsynced as named: a clean stop (SIGTERM flushes the AOF) loses nothing."""

    def __init__(
        self, workdir: Path, *, appendfsync: AppendFsync | None = None, save: str = "", args: Sequence[str] = ()
    ) -> None:
        """`save`: RDB snapshots (redis.conf's `save`, e.g. "3600 1"; "" for none); `args`: more options."""
        self.workdir = workdir
        self.appendfsync = appendfsync
        self.save = save
        self.args = list(args)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server; "
                "macOS: brew install redis); the tests that need no private server can use a running one "
                "named by REDIS_URL=redis://host:port/db",
                pytrace=False,
            )
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", self.save, *self.args]
        if self.appendfsync is None:
            args += ["--appendonly", "no"]
        else:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.pings():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server on port {self.port} did not start:\n{log}", pytrace=False)
            time.sleep(0.01)

    def pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        """SIGTERM: redis-server shuts down cleanly (it flushes and fsyncs the AOF first); `kill`:
        SIGKILL, as a crash."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
            self.proc.wait()
        else:
            stop_process(self.proc)
        self.proc = None

    def restart(self, while_down: Callable[[], None] | None = None) -> None:
        """Kill the server (no shutdown, as a crash), run `while_down`, and start it again on the same
        port: without an append-only file, the data is gone."""
        self.stop(kill=True)
        try:
            if while_down is not None:
                while_down()
        finally:
            self.start()

    def wipe(self) -> None:
        """Delete the data files (while stopped): the next start is a Redis that lost everything."""
        assert self.proc is None, "stop redis-server first"
        shutil.rmtree(self.workdir / "appendonlydir", ignore_errors=True)
        (self.workdir / "dump.rdb").unlink(missing_ok=True)
