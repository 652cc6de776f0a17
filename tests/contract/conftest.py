"""Redis topologies for the store contract tests: the session's plain server, and a TLS server, a
3-master Cluster and a Sentinel group started once per session (tests/redistopologies.py). Each
gives `url`, `settings` and `client()`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redistopologies import ClusterRedis, SentinelRedis, TlsRedis

from jwks_service.configparts import RedisSettings

REDIS_TOPOLOGIES = ("plain", "tls", "cluster", "sentinel")


class PlainRedis:
    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = RedisSettings()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="session")
def redis_plain(redis_url: str) -> PlainRedis:
    return PlainRedis(redis_url)


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path_factory.mktemp("redis-tls"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRedis]:
    cluster = ClusterRedis(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelRedis]:
    group = SentinelRedis(Path(tmp_path_factory.mktemp("redis-sentinel")), down_after_ms=5000)
    group.start()
    yield group
    group.stop()


@pytest.fixture(params=REDIS_TOPOLOGIES)
def redis_target(request: pytest.FixtureRequest) -> PlainRedis | TlsRedis | ClusterRedis | SentinelRedis:
    """Each Redis topology in turn; a test may narrow it with
    `@pytest.mark.parametrize("redis_target", ["plain"], indirect=True)`."""
    target: PlainRedis | TlsRedis | ClusterRedis | SentinelRedis = request.getfixturevalue(f"redis_{request.param}")
    return target
