"""Shared fixtures: a runtime on a manual clock in a temporary folder, the HTTP app, and a Redis server."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redisserver import RedisServer
from starlette.testclient import TestClient
from support import ISSUER, make_settings

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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The private Redis server, or None when $REDIS_URL names one to use instead."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
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
    server.start()
    yield server
    server.stop()
