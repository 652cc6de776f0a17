"""Redis beyond one server (API.md §7): the store URL forms, a credential provider on every kind of
connection, the change feed across a Cluster's nodes, TLS verification, and store.revocation_acks
(WAIT). Real redis-server processes (tests/contract/conftest.py), no mocks."""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.credentials import CredentialProvider, UsernamePasswordCredentialProvider
from redistopologies import ClusterRedis, SentinelRedis, TlsRedis
from support import free_port

from bench.certs import make_ca
from jwks_service.addresses import redact_url
from jwks_service.audit import event
from jwks_service.configparts import RedisSettings
from jwks_service.errors import ConfigError, StoreError
from jwks_service.model import Keyset, KeyState, KeyVersion
from jwks_service.runtime import Runtime
from jwks_service.stores.redis import RedisStore
from jwks_service.stores.redis_connect import connect, parse_multi


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def keyset(*keys: KeyVersion) -> Keyset:
    return Keyset("default", "ES256", "local", 0, keys)


def key(kid: str, state: KeyState = KeyState.CURRENT) -> KeyVersion:
    return KeyVersion(kid=kid, keyset="default", alg="ES256", state=state, created_at=1.0, public_jwk={"kty": "EC"})


# -- URLs -----------------------------------------------------------------------------------------


def test_multi_host_urls_parse_and_never_show_the_password() -> None:
    s = parse_multi("redis+sentinel://me:p%40ss@127.0.0.1:26379,[::1]:26380/mymaster/2")
    assert s.hosts == (("127.0.0.1", 26379), ("::1", 26380)) and s.service == "mymaster" and s.db == 2
    assert (s.username, s.password) == ("me", "p@ss")
    assert s.where == "sentinel 127.0.0.1:26379,::1:26380 service mymaster" and "p@ss" not in s.where
    c = parse_multi("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert c.hosts == (("127.0.0.1", 7000), ("127.0.0.1", 7001)) and c.db == 0 and c.password is None
    assert redact_url("redis+cluster://u:secret@h:1,h:2") == "redis+cluster://u:***@h:1,h:2"
    assert redact_url("redis+sentinel://:secret@h:1,h:2/svc/0") == "redis+sentinel://:***@h:1,h:2/svc/0"
    for bad in (
        "redis+sentinel://127.0.0.1:26379",  # no service
        "redis+sentinel://127.0.0.1:26379/svc/0/extra",
        "redis+sentinel://:secret@127.0.0.1:x/svc",
        "redis+cluster://127.0.0.1:7000/1",  # a cluster has database 0 only
        "redis+cluster://127.0.0.1:70000",
    ):
        with pytest.raises(ConfigError) as info:
            parse_multi(bad)
        assert "secret" not in info.value.description


def test_ca_file_needs_a_tls_url() -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        connect("redis://127.0.0.1:1/0", RedisSettings(ca_file="/etc/ssl/ca.pem"))


# -- a credential provider on every kind of connection --------------------------------------------


class Counting(CredentialProvider):
    def __init__(self, username: str, password: str) -> None:
        self.inner = UsernamePasswordCredentialProvider(username, password)
        self.calls = 0

    def get_credentials(self) -> tuple[str, str]:
        self.calls += 1
        return self.inner.get_credentials()  # type: ignore[return-value]


def data_nodes(target: Any) -> list[redis.Redis]:
    """Plain clients of every data node of a topology (not the Sentinels)."""
    if isinstance(target, ClusterRedis | SentinelRedis):
        return [n.client() for n in target.nodes]
    return [target.client()]


@pytest.fixture
def acl_user(redis_target: Any) -> Iterator[tuple[str, str]]:
    """A user of this test's own on every data node (ACLs are not replicated); gone afterwards."""
    user, password = f"jwks-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    nodes = data_nodes(redis_target)
    for r in nodes:
        r.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all"])
    yield user, password
    for r in nodes:
        r.acl_deluser(user)
        r.close()


def test_the_credential_provider_authenticates_every_data_connection(
    redis_target: Any, acl_user: tuple[str, str], namespace: str
) -> None:
    """Plain, TLS, Cluster (every node the store talks to) and Sentinel (the master; the Sentinels,
    which do not know this user, are not sent it): the connections log in as the provider's user."""
    user, password = acl_user
    provider = Counting(user, password)
    store = RedisStore(redis_target.url, redis_target.settings, namespace=namespace, credential_provider=provider)
    try:
        store.append_audit([event(1.0, "test", "write", "x")])
        assert store.revision() == 1 and provider.calls >= 1
        logged_in = []
        for r in data_nodes(redis_target):
            logged_in += [c for c in r.client_list() if c["user"] == user]
            r.close()
        assert logged_in, "no connection authenticated as the provider's user"
    finally:
        store.close()
    opened: list[RedisStore] = []

    def open_and_read() -> None:  # a cluster is mapped as the store opens: it fails there
        wrong = Counting(user, "wrong-pass")
        opened.append(
            RedisStore(redis_target.url, redis_target.settings, namespace=namespace, credential_provider=wrong)
        )
        opened[0].revision()

    with pytest.raises(StoreError) as info:
        open_and_read()
    assert "refused the credentials" in info.value.description and info.value.status == 503
    assert "wrong-pass" not in info.value.description
    for s in opened:
        s.close()


# -- Cluster --------------------------------------------------------------------------------------


def test_a_write_on_a_cluster_is_published_to_subscribers_on_every_node(
    redis_cluster: ClusterRedis, namespace: str
) -> None:
    """The store's keys (and its op keys) live on the one node owning the hash tag's slot; the PUBLISH
    of its scripts reaches subscribers connected to any node of the cluster."""
    raw = redis_cluster.client()
    store = RedisStore(redis_cluster.url, namespace=namespace)
    subscribers = []
    try:
        for node in raw.get_primaries():  # type: ignore[no-untyped-call]
            p = raw.pubsub(node=node)  # type: ignore[no-untyped-call]
            p.subscribe(store.channel)
            assert p.get_message(timeout=2)["type"] == "subscribe"
            subscribers.append(p)
        assert len(subscribers) == 3
        store.save_keyset(keyset(key("a")), 0, [event(1.0, "test", "create", "a")])
        store.revoke_token("j1", 9e9)
        for p in subscribers:
            got = []
            deadline = time.monotonic() + 3
            while len(got) < 2 and time.monotonic() < deadline:
                msg = p.get_message(timeout=0.2)
                if msg and msg["type"] == "message":
                    got.append(int(msg["data"]))
            assert got == [1, 2], got
        owner = raw.get_node_from_key(f"{{{namespace}}}:x")  # type: ignore[no-untyped-call]
        for node in raw.get_primaries():  # type: ignore[no-untyped-call]
            keys = list(node.redis_connection.scan_iter(match=f"{{{namespace}}}:*"))
            assert bool(keys) == (node.name == owner.name), (node.name, keys)
    finally:
        for p in subscribers:
            p.close()
        for k in raw.scan_iter(match=f"{{{namespace}}}:*"):
            raw.delete(k)
        raw.close()
        store.close()


def test_a_cluster_that_cannot_be_reached_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unreachable") as info:
        RedisStore("redis+cluster://:pw-secret@127.0.0.1:1,127.0.0.1:2", socket_timeout=0.5)
    assert "pw-secret" not in info.value.description


def test_sentinels_that_cannot_be_reached_are_a_short_store_error() -> None:
    store = RedisStore("redis+sentinel://:pw-secret@127.0.0.1:1,127.0.0.1:2/svc/0", socket_timeout=0.5)
    try:
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.revision()
        assert time.monotonic() - start < 5
        text = info.value.description
        assert text.startswith("Redis at sentinel 127.0.0.1:1,127.0.0.1:2 service svc unreachable"), text
        assert "no Sentinel named a master" in text and "pw-secret" not in text and len(text) < 200, text
    finally:
        store.close()


def test_the_url_password_logs_in_to_the_sentinels_and_the_master(tmp_path: Path, namespace: str) -> None:
    group = SentinelRedis(tmp_path, replicas=0, sentinels=1, password="s3ntinel-pass")
    group.start()
    try:
        store = RedisStore(group.url, namespace=namespace)
        store.append_audit([event(1.0, "t", "write", "x")])
        assert store.revision() == 1
        store.close()
        wrong = RedisStore(group.url.replace("s3ntinel-pass", "wrong-pass"), namespace=namespace)
        with pytest.raises(StoreError) as info:
            wrong.revision()
        wrong.close()
        assert "wrong-pass" not in info.value.description and "s3ntinel" not in info.value.description
    finally:
        group.stop()


def test_a_dead_sentinel_first_in_the_url_costs_no_time(redis_sentinel: SentinelRedis, namespace: str) -> None:
    url = redis_sentinel.url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{free_port()},")
    store = RedisStore(url, namespace=namespace)
    try:
        start = time.monotonic()
        for _ in range(20):  # each new connection asks the Sentinels again, the dead one first
            store.revision()
            store.close()
        assert time.monotonic() - start < 2
    finally:
        store.close()


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_verifies_the_ca_and_the_host_name(redis_tls: TlsRedis, tmp_path: Any, namespace: str) -> None:
    url = redis_tls.url
    ok = RedisStore(url.replace("127.0.0.1", "localhost"), redis_tls.settings, namespace=namespace)
    assert ok.revision() == 0  # the certificate names localhost and 127.0.0.1
    ok.close()
    other_ca = make_ca(tmp_path, "another CA")
    for settings in (RedisSettings(ca_file=str(other_ca.file)), RedisSettings()):  # a stranger's CA, the system's
        store = RedisStore(url, settings, namespace=namespace, socket_timeout=1.0)
        with pytest.raises(StoreError, match="certificate verify failed"):
            store.revision()
        store.close()
    # 127.0.0.2 reaches the same server, but its certificate does not name that address.
    store = RedisStore(url.replace("127.0.0.1", "127.0.0.2"), redis_tls.settings, namespace=namespace)
    with pytest.raises(StoreError) as info:
        store.revision()
    assert "certificate verify failed" in info.value.description, info.value.description
    assert "127.0.0.2" in info.value.description
    store.close()


# -- revocation_acks: WAIT ------------------------------------------------------------------------


def test_revocations_wait_for_the_replicas_store_revocation_acks_asks_for(
    redis_sentinel: SentinelRedis, namespace: str
) -> None:
    """One replica: with revocation_acks = 1 a revocation returns once the replica holds it; with 2 it
    is a StoreError (a 503) naming the setting, never a false success. Other writes never wait."""
    url = redis_sentinel.url
    one = RedisStore(url, RedisSettings(revocation_acks=1), namespace=namespace)
    two = RedisStore(url, RedisSettings(revocation_acks=2), namespace=namespace, socket_timeout=0.6)
    replica = redis_sentinel.node_on(
        next(n.port for n in redis_sentinel.nodes if n.port != redis_sentinel.master_port())
    )
    raw_replica = replica.client()
    try:
        for i in range(20):
            one.revoke_token(f"j{i}", 9e9)
            assert raw_replica.zscore(f"{{{namespace}}}:revoked", f"j{i}") == 9e9  # already there: no waiting
        saved = two.save_keyset(keyset(key("a"), key("b", KeyState.NEXT)), 0, [event(1.0, "t", "key.created", "b")])
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            two.revoke_token("j-two", 9e9)
        assert time.monotonic() - start < 1.5  # WAIT gives up within half the read timeout
        assert "1 of the 2 replicas store.revocation_acks asks for" in info.value.description
        assert info.value.status == 503
        # A key revocation is a keyset write; confirm_revocation (which the service calls after it, and
        # after a revocation found done already) WAITs for every write before it.
        revoked = keyset(key("a"), key("b", KeyState.REVOKED))
        done = two.save_keyset(revoked, saved.revision, [event(2.0, "t", "key.revoked", "b")])
        with pytest.raises(StoreError, match="1 of the 2 replicas"):
            two.confirm_revocation()
        one.confirm_revocation()
        assert raw_replica.hget(f"{{{namespace}}}:keyset:default", "revision") == str(done.revision)
        lax = RedisStore(url, namespace=namespace)
        lax.confirm_revocation()  # revocation_acks = 0: nothing to wait for
        lax.close()
    finally:
        raw_replica.close()
        one.close()
        two.close()
        master = redis_sentinel.client()
        for k in master.scan_iter(match=f"{{{namespace}}}:*"):
            master.delete(k)
        master.close()


def test_revocation_acks_on_a_cluster_without_replicas_fail_the_revocation(
    redis_cluster: ClusterRedis, namespace: str
) -> None:
    store = RedisStore(redis_cluster.url, RedisSettings(revocation_acks=1), namespace=namespace)
    raw: RedisCluster = redis_cluster.client()
    try:
        store.append_audit([event(1.0, "t", "write", "x")])  # not a revocation: no WAIT
        with pytest.raises(StoreError, match="0 of the 1 replicas"):
            store.revoke_token("j1", 9e9)
    finally:
        for k in raw.scan_iter(match=f"{{{namespace}}}:*"):
            raw.delete(k)
        raw.close()
        store.close()


def test_a_key_revocation_is_confirmed_only_when_the_replicas_hold_it(
    redis_sentinel: SentinelRedis, tmp_path: Path, runtime_factory: Callable[..., Runtime]
) -> None:
    """The service's revoke (admin API, CLI): 503 while fewer replicas than store.revocation_acks hold it,
    and so is a retry (the key is revoked already: that must not read as confirmed); 200 once enough do."""
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    kek.chmod(0o600)
    strict = runtime_factory(store={"url": redis_sentinel.url, "revocation_acks": 2})
    try:
        kid = strict.keys.snapshot.signing["default"].kid
        for _ in range(2):
            with pytest.raises(StoreError, match="revocation_acks"):
                strict.keys.revoke(kid, reason="test: leaked")
        lenient = runtime_factory(store={"url": redis_sentinel.url, "revocation_acks": 1})
        keyset_, revoked = lenient.keys.revoke(kid, reason="test: leaked")
        assert revoked.state == KeyState.REVOKED and keyset_.find(kid) == revoked
    finally:
        master = redis_sentinel.client()
        for k in master.scan_iter(match="{jwks}:*"):
            master.delete(k)
        master.close()
