"""API.md §7: `check-config` and `/readyz` warn when the Redis the store reaches keeps nothing on disk.

Real `redis-server` processes, started with and without persistence (`--save '' --appendonly no`,
`--appendonly yes`, `--save "3600 1"`), with CONFIG renamed away, and with an ACL user that may run
neither CONFIG nor INFO. The service stays ready either way: the warning is a member of the ready
answer, checked in the background.
"""

from __future__ import annotations

import base64
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redisserver import AppendFsync, RedisServer
from replicas import Fleet, Policy

from jwks_service.clock import SystemClock
from jwks_service.store_warnings import StoreWarnings
from jwks_service.stores.persistence import NO_PERSISTENCE, UNKNOWN, of_store
from jwks_service.stores.redis import RedisStore

pytestmark = pytest.mark.slow

NONE = f"store: {NO_PERSISTENCE}"


def server(tmp_path: Path, appendfsync: AppendFsync | None, save: str = "", args: tuple[str, ...] = ()) -> RedisServer:
    workdir = tmp_path / "redis"
    workdir.mkdir(exist_ok=True)
    s = RedisServer(workdir, appendfsync=appendfsync, save=save, args=args)
    s.start()
    return s


@pytest.fixture
def stores() -> Iterator[list[RedisStore]]:
    opened: list[RedisStore] = []
    yield opened
    for s in opened:
        s.close()


@pytest.mark.parametrize(
    ("appendfsync", "save", "aof", "rdb"),
    [(None, "", False, False), ("everysec", "", True, False), (None, "3600 1", False, True)],
)
def test_config_get(
    tmp_path: Path, stores: list[RedisStore], appendfsync: AppendFsync | None, save: str, aof: bool, rdb: bool
) -> None:
    s = server(tmp_path, appendfsync, save)
    try:
        stores.append(store := RedisStore(s.url))
        found = of_store(store, time.time())
        assert (found.source, found.aof, found.rdb) == ("config", aof, rdb)
        assert found.warning == (None if aof or rdb else NO_PERSISTENCE)
    finally:
        s.stop()


@pytest.mark.parametrize(("appendfsync", "aof"), [(None, False), ("everysec", True)])
def test_info_when_config_is_renamed(
    tmp_path: Path, stores: list[RedisStore], appendfsync: AppendFsync | None, aof: bool
) -> None:
    s = server(tmp_path, appendfsync, args=("--rename-command", "CONFIG", ""))
    try:
        stores.append(store := RedisStore(s.url))
        store.revoke_token("some-jti", time.time() + 60)  # a change no snapshot holds
        found = of_store(store, time.time())
        assert (found.source, found.aof) == ("info", aof)
        assert found.warning is None  # unsaved for less than a save schedule may take
        later = of_store(store, time.time() + 10, rdb_max_age=5)  # past that: nothing saves them
        assert later.warning == (None if aof else NO_PERSISTENCE)
    finally:
        s.stop()


def test_unknown_when_the_acl_refuses_config_and_info(tmp_path: Path, stores: list[RedisStore]) -> None:
    s = server(tmp_path, None)
    password = secrets.token_urlsafe(16)
    try:
        with redis.Redis.from_url(s.url) as admin:
            rules = ("on", f">{password}", "~*", "&*", "+@all", "-config", "-info")
            admin.execute_command("ACL", "SETUSER", "jwks", *rules)
        url = s.url.replace("redis://", f"redis://jwks:{password}@")
        stores.append(store := RedisStore(url))
        assert store.revision() == 0  # the store itself works
        found = of_store(store, time.time())
        assert (found.source, found.warning) == ("unknown", UNKNOWN)
        assert password not in found.describe()
    finally:
        s.stop()


def test_warnings_are_logged_once_and_cleared(
    tmp_path: Path, stores: list[RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    s = server(tmp_path, None)
    try:
        stores.append(store := RedisStore(s.url))
        warnings = StoreWarnings(store, SystemClock())
        assert warnings.current == ()
        with caplog.at_level(logging.INFO, logger="jwks_service"):
            for _ in range(3):
                assert warnings.check() == (NONE,)
            logged = [r for r in caplog.records if NO_PERSISTENCE in r.getMessage()]
            assert len(logged) == 1
            assert logged[0].levelno == logging.WARNING
            assert "AOF off, RDB off (from CONFIG GET)" in logged[0].getMessage()
            with redis.Redis.from_url(s.url) as admin:
                admin.config_set("appendonly", "yes")  # turned on live: the next check clears it
            assert warnings.check() == ()
            assert any(r.getMessage() == f"warning cleared: {NONE}" for r in caplog.records)
        s.stop()
        assert warnings.check() == ()  # unreachable: the last answer stays (readiness says the rest)
        assert warnings.checks == 5
    finally:
        s.stop()


def check_config(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    kek.chmod(0o600)
    config = tmp_path / "jwks.toml"
    config.write_text(
        f'issuer = "http://127.0.0.1:8000"\n[store]\nurl = "{url}"\n[secrets]\nkek_file = "{kek}"\n'
        '[keysets.default]\nalg = "ES256"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "jwks_service", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("appendfsync", "warned"), [(None, True), ("everysec", False)])
def test_check_config(tmp_path: Path, appendfsync: AppendFsync | None, warned: bool) -> None:
    s = server(tmp_path, appendfsync)
    try:
        result = check_config(tmp_path, s.url)
    finally:
        s.stop()
    assert result.returncode == 0, result.stderr  # a warning, not a refusal
    assert "configuration OK" in result.stdout
    aof = "on" if appendfsync else "off"
    assert f"store persistence: AOF {aof}, RDB off (from CONFIG GET)" in result.stdout
    assert (f"warning: {NONE}" in result.stderr) is warned, result.stderr


@pytest.mark.parametrize(("appendfsync", "warnings"), [(None, [NONE]), ("always", [])])
def test_readyz_warns_and_stays_ready(tmp_path: Path, appendfsync: AppendFsync | None, warnings: list[str]) -> None:
    fleet = Fleet(tmp_path, Policy(rotation_period="1h", prepublish="2s", token_ttl="5m"), replicas=1)
    fleet.redis.appendfsync = appendfsync
    with fleet:
        replica = fleet.replicas[0]
        deadline = time.monotonic() + 10
        while True:  # the first check runs as the server starts, in the background
            r = httpx.get(replica.url("/readyz"), timeout=5)
            assert r.status_code == 200, r.text
            if r.json()["warnings"] == warnings or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not warnings:  # a check has run by now (it runs first thing): still nothing to warn about
            time.sleep(1.0)
            r = httpx.get(replica.url("/readyz"), timeout=5)
        assert r.json() == {"status": "ready", "keysets": ["default"], "warnings": warnings}
        fleet.token(replica)  # and it serves
        assert replica.tail(100_000).count(NO_PERSISTENCE) == (1 if warnings else 0)
