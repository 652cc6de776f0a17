"""Shared fixtures: a runtime on a manual clock in a temporary folder, the HTTP app, and a Redis server."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import ISSUER, free_port, make_settings

from bench.baoserver import OpenBaoServer, OpenBaoUnavailable
from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime


@pytest.fixture
def clock() -> ManualClock:
    # Start at the real time, so outside verifiers (PyJWT) that read the system clock agree.
    return ManualClock(float(int(time.time())))


@pytest.fixture
def runtime_factory(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on one store and KEK: each call is like another process of the same deployment."""
    opened: list[Runtime] = []

    def factory(keysets: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Runtime:
        rt = build_runtime(make_settings(tmp_path, keysets, **extra), clock)
        opened.append(rt)
        return rt

    yield factory
    for rt in opened:
        rt.close()


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime]) -> Runtime:
    return runtime_factory()


@pytest.fixture
def http(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        yield client


class RedisServer:
    """A private `redis-server` on a free loopback port: no persistence, gone at session end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server; "
                "macOS: brew install redis), or set REDIS_URL=redis://host:port/db to use a running server",
                pytrace=False,
            )
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._pings():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server on port {self.port} did not start:\n{log}", pytrace=False)
            time.sleep(0.02)

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, while_down: Callable[[], None] | None = None) -> None:
        """Kill the server (no shutdown, as a crash), run `while_down`, and start it again on the same
        port: the data is gone."""
        self.stop(kill=True)
        try:
            if while_down is not None:
                while_down()
        finally:
            self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The private Redis server, or None when $REDIS_URL names one to use instead."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    """$REDIS_URL when set (never flushed: tests keep to their own namespaces), else the private server."""
    return redis_server.url if redis_server is not None else os.environ["REDIS_URL"]


@pytest.fixture
def restart_redis(redis_server: RedisServer | None) -> Callable[..., None]:
    """Restart the private Redis server (kill, start on the same port), optionally running a function
    while it is down; skips the test when REDIS_URL is set."""
    if redis_server is None:
        pytest.skip("REDIS_URL is set: the tests do not restart a server they did not start")
    return redis_server.restart


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """A real OpenBao dev server with transit enabled (bench/baoserver.py, which the benchmarks use
    too): `.addr`, `.root_token`, `.log`, `.client(token=None)`."""
    server = OpenBaoServer(tmp_path_factory.mktemp("openbao"))
    try:
        server.start()
    except OpenBaoUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test alone (it is stopped or frozen), and the KEK a Redis store needs."""
    (tmp_path / "redis-data").mkdir()
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    kek.chmod(0o600)
    server = RedisServer(tmp_path / "redis-data")
    yield server
    server.stop()
