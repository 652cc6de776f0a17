"""The Redis store's own credentials from their three sources (stores/redis_credentials.py), against a real
redis-server with ACL users and a real OpenBao: each source serves, a rotation is picked up with no failed
call, a refusal that the source cannot mend is one StoreError naming no password, and leased credentials
are renewed, then replaced before their max TTL while calls go on.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redisacl import AclRedis, VaultRedis
from redisserver import RedisServer

from bench.baoserver import OpenBaoServer
from jwks_service.config import Settings, build_settings
from jwks_service.errors import ConfigError, StoreError
from jwks_service.operations import check_vault
from jwks_service.stores.redis import RedisStore
from jwks_service.stores.redis_credentials import REFRESH_COOLDOWN, PasswordFile, VaultCreds, VaultKV, split_user
from jwks_service.vaultapi import VaultClient

pytestmark = pytest.mark.slow


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    (tmp_path / "redis").mkdir()
    server = AclRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def vault_redis(openbao: OpenBaoServer, tmp_path: Path) -> Iterator[VaultRedis]:
    v = VaultRedis(openbao, tmp_path)
    yield v
    v.close()


@pytest.fixture
def service_vault(openbao: OpenBaoServer, vault_redis: VaultRedis) -> Iterator[VaultClient]:
    """The service's Vault client, with the token of the deploy policies only."""
    client = VaultClient(openbao.addr, vault_redis.token_file.read_text().strip())
    yield client
    client.close()


def password() -> str:
    return "pw-" + secrets.token_urlsafe(18)


def calls(store: RedisStore, n: int) -> int:
    """`n` reads and a write; how many failed."""
    failed = 0
    for _ in range(n):
        try:
            store.revision()
            store.is_empty()
        except StoreError:
            failed += 1
    store.revoke_token(secrets.token_hex(8), time.time() + 60)
    return failed


def test_split_user_keeps_every_scheme_and_drops_the_user_part() -> None:
    assert split_user("redis://jwks@127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0", "jwks")
    assert split_user("rediss://127.0.0.1:6380/1") == ("rediss://127.0.0.1:6380/1", "")
    assert split_user("redis+sentinel://svc@h1:1,h2:2/mymaster/0") == ("redis+sentinel://h1:1,h2:2/mymaster/0", "svc")
    assert split_user("unix://jwks@/run/redis.sock?db=0") == ("unix:///run/redis.sock?db=0", "jwks")


def test_a_password_file_rotated_under_the_store_is_re_read_once_with_no_failed_call(
    acl_redis: AclRedis, tmp_path: Path
) -> None:
    first, second = password(), password()
    acl_redis.user("jwks", first)
    secret = tmp_path / "redis-password"
    secret.write_text(first + "\n")
    url, user = split_user(f"redis://jwks@127.0.0.1:{acl_redis.port}/0")
    creds = PasswordFile(str(secret), user)
    store = RedisStore(url, credential_provider=creds)
    try:
        assert calls(store, 5) == 0
        assert creds.reads == 1
        secret.write_text(second + "\n")
        assert acl_redis.rotate("jwks", second) >= 1  # every connection must authenticate again
        assert calls(store, 20) == 0
        assert creds.reads == 2  # re-read once, on the refusal
        assert set(creds.secrets()) == {first, second}
    finally:
        store.close()


def test_a_refusal_the_source_cannot_mend_is_a_store_error_naming_no_password(
    acl_redis: AclRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = password()
    acl_redis.user("jwks", old)
    secret = tmp_path / "redis-password"
    secret.write_text(old)
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=PasswordFile(str(secret), "jwks"))
    try:
        assert calls(store, 1) == 0
        acl_redis.rotate("jwks", password())  # the file still holds the old one
        with pytest.raises(StoreError) as refused:
            store.revision()
        assert "refused the credentials" in refused.value.description
        assert old not in refused.value.description
        time.sleep(REFRESH_COOLDOWN)
        secret.unlink()
        with pytest.raises(StoreError):
            store.revision()
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(f"store.password_file: file {secret} does not exist" in w for w in warned), warned
        assert not any(old in r.getMessage() for r in caplog.records)
    finally:
        store.close()
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=PasswordFile(str(secret), "jwks"))
    try:
        with pytest.raises(StoreError, match=re.escape(f"store.password_file: file {secret} does not exist")):
            store.revision()
    finally:
        store.close()


def test_a_password_in_vault_kv_is_read_with_the_service_login_and_re_read_on_refusal(
    acl_redis: AclRedis, vault_redis: VaultRedis, service_vault: VaultClient
) -> None:
    first, second = password(), password()
    acl_redis.user("jwks", first)
    vault_redis.put_password(first)
    creds = VaultKV(service_vault, vault_redis.kv_path, "password", "jwks")
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=creds)
    try:
        assert calls(store, 5) == 0
        vault_redis.put_password(second)  # a new version
        acl_redis.rotate("jwks", second)
        assert calls(store, 20) == 0
        assert creds.reads == 2
    finally:
        store.close()
    missing = VaultKV(service_vault, vault_redis.kv_path, "nope", "jwks")
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=missing)
    try:
        with pytest.raises(StoreError, match=r"store\.vault_kv: cannot read the Redis credentials from .*#nope"):
            store.revision()
    finally:
        store.close()


def test_dynamic_credentials_are_renewed_then_replaced_before_their_max_ttl_with_no_failed_call(
    acl_redis: AclRedis, vault_redis: VaultRedis, service_vault: VaultClient
) -> None:
    vault_redis.database(acl_redis, default_ttl="3s", max_ttl="7s")
    creds = VaultCreds(service_vault, vault_redis.creds_path)
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=creds)
    users_seen: set[str] = set()
    failed = 0
    try:
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:
            failed += calls(store, 3)
            users_seen |= {u for u in acl_redis.users() if u.startswith("V_")}
            time.sleep(0.05)
        print(
            f"\ndynamic credentials, 16 s at default_ttl 3s / max_ttl 7s: {creds.leases} leases, {creds.renewals}"
            f" renewals, {len(users_seen)} Redis users seen, {failed} failed calls"
        )
        assert failed == 0
        assert creds.leases >= 3  # replaced before each max TTL
        assert creds.renewals >= 2
        assert len(users_seen) >= 3
        live = {u for u in acl_redis.users() if u.startswith("V_")}
        assert len(live) <= 2  # the old leases were revoked by Vault at their max TTL (one may overlap)
    finally:
        store.close()
    # close() gave the lease back (the deploy policy allows sys/leases/revoke): its user is gone
    assert not {u for u in acl_redis.users() if u.startswith("V_")}


def test_passwords_handed_out_are_redacted_from_store_errors(acl_redis: AclRedis, tmp_path: Path) -> None:
    first = password()
    acl_redis.user("jwks", first)
    secret = tmp_path / "redis-password"
    secret.write_text(first)
    store = RedisStore(f"redis://127.0.0.1:{acl_redis.port}/0", credential_provider=PasswordFile(str(secret), "jwks"))
    try:
        store.revision()
        assert store._describe(RuntimeError(f"AUTH jwks {first} failed")) == "AUTH jwks *** failed"
    finally:
        store.close()


def test_check_config_names_the_vault_paths_the_credentials_need(
    openbao: OpenBaoServer, vault_redis: VaultRedis, tmp_path: Path
) -> None:
    weak = tmp_path / "weak-token"
    weak.write_text(openbao.client().auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"])

    def settings(token_file: Path, **store: str) -> Settings:
        return build_settings(
            {
                "store": {"url": "redis://127.0.0.1:6379/0", **store},
                "vault": {"addr": openbao.addr, "token_file": str(token_file)},
            }
        )

    with pytest.raises(ConfigError) as info:
        check_vault(settings(weak, vault_creds=vault_redis.creds_path), lambda _: None)
    # (Vault's default policy grants sys/leases/renew already.)
    assert info.value.description.splitlines() == [
        f"vault: the token's policy must allow read on {vault_redis.creds_path} (see deploy/vault-policy-redis.hcl)",
    ]
    with pytest.raises(ConfigError, match=re.escape(f"allow read on {vault_redis.kv_path} (see")):
        check_vault(settings(weak, vault_kv=f"{vault_redis.kv_path}#password"), lambda _: None)
    said: list[str] = []
    check_vault(settings(vault_redis.token_file, vault_creds=vault_redis.creds_path), said.append).close()
    assert said == [
        f"vault: {openbao.addr}: logged in (the token in vault.token_file {vault_redis.token_file}); policy OK"
    ]


def test_a_password_file_for_the_default_user_follows_requirepass(tmp_path: Path) -> None:
    """No username: AUTH with the password alone, as `requirepass` (the default user) wants it."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    first, second = password(), password()
    secret = tmp_path / "redis-password"
    secret.write_text(first)
    try:
        with redis.Redis(port=server.port) as r:
            r.config_set("requirepass", first)
        creds = PasswordFile(str(secret))
        store = RedisStore(server.url, credential_provider=creds)
        try:
            assert calls(store, 3) == 0
            secret.write_text(second)
            with redis.Redis(port=server.port, password=first) as r:
                r.config_set("requirepass", second)
                r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            assert calls(store, 10) == 0
            assert (creds.reads, creds.get_credentials()) == (2, (second,))
        finally:
            store.close()
    finally:
        server.stop()
