"""RedisStore beyond the conformance suite: Lua compare-and-set under contention, the one-hash-tag key
layout, errors of an unreachable server, revocation expiry, exactly-once retried writes, and the
pub/sub change feed (including a Redis restart). Runs against a real redis-server (see conftest)."""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from support import free_port

import jwks_service.stores.redis as redis_module
from jwks_service.adoption import Fetch
from jwks_service.errors import ConfigError, RevisionConflictError, StoreError
from jwks_service.model import AuditEvent, Client, Keyset, KeyState, KeyVersion, SecretHash
from jwks_service.stores.codec import client_to_dict
from jwks_service.stores.redis import AUTH_FAILURE_RETENTION, FAILING_TRIM_MARGIN, REVOKED_TRIM_MARGIN, RedisStore

OpenStore = Callable[..., RedisStore]


@pytest.fixture
def raw(redis_target: Any) -> Iterator[redis.Redis]:
    """A plain redis-py client of the test's topology (tests/contract/conftest.py: each test runs on a
    plain server, over TLS, on a 3-master Cluster and on a Sentinel group)."""
    r = redis_target.client()
    yield r
    r.close()


@pytest.fixture
def namespace(raw: redis.Redis) -> Iterator[str]:
    """A namespace of this test's own; its keys are deleted afterwards (never FLUSHDB: REDIS_URL may be shared)."""
    ns = f"t-{uuid.uuid4().hex[:12]}"
    yield ns
    keys = list(raw.scan_iter(match=f"{{{ns}}}:*", count=1000))
    if keys:
        raw.delete(*keys)


@pytest.fixture
def open_store(redis_target: Any, namespace: str) -> Iterator[OpenStore]:
    """Opens RedisStores on the test's namespace: each call is another replica's view."""
    opened: list[RedisStore] = []

    def open_(**kw: object) -> RedisStore:
        store = RedisStore(redis_target.url, redis_target.settings, namespace=namespace, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for s in opened:
        s.close()


def key(kid: str, state: KeyState = KeyState.CURRENT, t: float = 1000.0, keyset: str = "default") -> KeyVersion:
    return KeyVersion(kid=kid, keyset=keyset, alg="ES256", state=state, created_at=t, public_jwk={"kty": "EC"})


def keyset(*keys: KeyVersion, name: str = "default") -> Keyset:
    return Keyset(name, "ES256", "local", 0, keys)


def event(target: str, at: float = 1.0) -> AuditEvent:
    return AuditEvent(at=at, actor="test", action="write", target=target)


def client(client_id: str) -> Client:
    return Client(client_id, "svc", ("read",), ("api",), "default", 900, 100.0, (SecretHash(b"\x01" * 32, 100.0),))


# -- compare-and-set ------------------------------------------------------------------------------


def race(stores: list[RedisStore], expected: int, tag: str) -> tuple[list[str], list[str]]:
    """Every store tries the same compare-and-set at once; returns (winners, losers)."""
    barrier = threading.Barrier(len(stores))
    wins: list[str] = []
    losses: list[str] = []

    def writer(name: str, s: RedisStore) -> None:
        barrier.wait()
        try:
            s.save_keyset(keyset(key("a"), key(name, KeyState.NEXT)), expected, [event(name)])
            wins.append(name)
        except RevisionConflictError:
            losses.append(name)

    threads = [threading.Thread(target=writer, args=(f"{tag}w{i}", s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins, losses


def test_lua_compare_and_set_eight_threads_exactly_one_wins_each_round(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(8)]
    observer = open_store()
    for revision in range(5):  # the first round races to create the keyset (expected revision 0)
        global_before = observer.revision()
        wins, losses = race(stores, revision, f"r{revision}")
        assert len(wins) == 1 and len(losses) == 7, (revision, wins, losses)
        loaded = observer.get_keyset("default")
        assert loaded is not None and loaded.revision == revision + 1
        assert {k.kid for k in loaded.keys} == {"a", wins[0]}
        assert observer.revision() == global_before + 1  # losers wrote nothing: no bump, no audit
        assert [e.target for e in observer.list_audit(limit=1)] == wins
    assert len(observer.list_audit()) == 5


def test_a_retried_write_is_applied_once(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client retry after a lost reply re-sends the same op id: the script replays its first reply."""
    store = open_store()
    fixed = uuid.uuid4()
    monkeypatch.setattr(redis_module, "uuid", SimpleNamespace(uuid4=lambda: fixed))
    store.append_audit([event("once")])
    store.append_audit([event("once")])  # same op id: a replay
    assert [e.target for e in store.list_audit()] == ["once"] and store.revision() == 1
    fixed = uuid.uuid4()
    first = store.save_keyset(keyset(key("a")), 0, [event("created")])
    again = store.save_keyset(keyset(key("a")), 0, [event("created")])  # no conflict: it is the same write
    assert first.revision == again.revision == 1
    assert [e.target for e in store.list_audit()] == ["created", "once"] and store.revision() == 2


def test_client_records_keep_their_floats_and_read_old_records_as_revision_one(
    open_store: OpenStore, raw: redis.Redis, namespace: str
) -> None:
    """The Lua script splices the revision into the JSON it was sent, never re-encoding it (cjson
    would round floats to 14 digits); a record written before revisions existed is revision 1."""
    store = open_store()
    precise = Client(
        "c1", "svc", ("read",), ("api",), "default", 900, 1700000000.123456, (SecretHash(b"\x01" * 32, 1e-7, 2.5e300),)
    )
    saved = store.save_client(precise, 0)
    loaded = store.get_client("c1")
    assert loaded == precise and loaded is not None and loaded.revision == saved.revision == 1
    legacy = json.dumps(client_to_dict(client("old")))
    raw.set(f"{{{namespace}}}:client:old", legacy)
    raw.sadd(f"{{{namespace}}}:clients", "old")
    old = store.get_client("old")
    assert old is not None and old.revision == 1
    with pytest.raises(RevisionConflictError):
        store.save_client(old, 0)
    assert store.save_client(replace(old, name="new"), 1).revision == 2
    assert raw.get(f"{{{namespace}}}:client:old") == json.dumps(
        {**client_to_dict(replace(old, name="new")), "revision": 2}, separators=(",", ":")
    )


# -- key layout -----------------------------------------------------------------------------------


def test_every_key_shares_one_hash_tag(
    open_store: OpenStore, raw: redis.Redis, namespace: str, redis_server: object, redis_target: Any
) -> None:
    before = set(raw.scan_iter(match="*", count=1000))
    store = open_store()
    # Names with braces must not move a key to another slot: the tag is the first {...} of the key.
    store.save_keyset(keyset(key("a", keyset="we}ird{name"), name="we}ird{name"), 0, [event("ks")])
    store.save_keyset(keyset(key("a")), 0)
    store.put_client(client("c{1}"), [event("client")])
    store.put_client(client("gone"))
    store.delete_client("gone", [event("delete")])
    store.revoke_token("jti-1", 2000.0)
    store.append_audit([event("audit")])
    store.record_auth_failure(["client:{x}", "addr:127.0.0.1"], 10.0)
    store.record_fetches([Fetch("orders/{1}", '"e"', 10.0)], {'"e"': ["a"]}, 10.0, 3600, 10)
    assert store.is_empty() is False

    ours = set(raw.scan_iter(match=f"*{namespace}*", count=1000))
    prefix = f"{{{namespace}}}:"
    assert ours and all(k.startswith(prefix) for k in ours), ours
    assert {key_slot(k.encode()) for k in ours} == {key_slot(prefix.encode())}
    kinds = {k[len(prefix) :].split(":")[0] for k in ours}
    expected = {"revision", "keysets", "keyset", "clients", "client", "revoked", "audit", "audit_at", "audit_seq"}
    expected |= {"audit_last", "audit_first"}  # the audit chain's ends
    expected |= {"fetchers", "fetchers_at", "revisions", "revisions_at"}  # adoption records
    assert kinds == expected | {"client_index", "fail", "failing", "op"}
    assert raw.exists(f"{prefix}client:gone") == 0
    # On a server of ours (not $REDIS_URL) nothing else writes, so nothing may lie outside the namespace.
    if redis_server is not None or redis_target.url != os.environ.get("REDIS_URL"):
        assert set(raw.scan_iter(match="*", count=1000)) - before == ours


def test_namespaces_isolate_and_are_validated(redis_url: str, open_store: OpenStore) -> None:
    mine = open_store()
    mine.put_client(client("c1"))
    other = RedisStore(redis_url, namespace=f"t-{uuid.uuid4().hex[:12]}")
    try:
        assert other.is_empty() and other.get_client("c1") is None and other.revision() == 0
    finally:
        other.close()
    for bad in ("", "a{b", "a}b", "a b"):
        with pytest.raises(ConfigError):
            RedisStore(redis_url, namespace=bad)


# -- errors ---------------------------------------------------------------------------------------


def closed_port() -> int:
    return free_port()  # bound then closed: nothing listens there


def test_unreachable_server_is_a_store_error_within_the_timeout() -> None:
    port = closed_port()
    store = RedisStore(f"redis://:hunter2-secret@127.0.0.1:{port}/0", socket_timeout=1.0)
    calls: list[Callable[[], object]] = [
        store.revision,
        lambda: store.save_keyset(keyset(key("a")), 0),
        lambda: store.revoked_tokens(0.0),
        lambda: store.list_audit(since=0.0),
    ]
    try:
        for call in calls:
            start = time.monotonic()
            with pytest.raises(StoreError) as info:
                call()
            assert time.monotonic() - start < 5
            text = info.value.description
            assert f"Redis at 127.0.0.1:{port} unreachable" in text and "hunter2" not in text, text
            assert info.value.status == 503
    finally:
        store.close()


def test_a_silent_server_times_out_within_the_socket_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        try:
            start = time.monotonic()
            with pytest.raises(StoreError, match=f"Redis at 127.0.0.1:{port} unreachable"):
                store.get_keyset("default")
            assert time.monotonic() - start < 5
        finally:
            store.close()


def test_credentials_and_urls_never_leak(redis_url: str) -> None:
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    store = RedisStore(f"redis://nobody:s3cret-pass@{host_port}/0")
    try:
        with pytest.raises(StoreError) as info:
            store.revision()
        assert "s3cret-pass" not in info.value.description
    finally:
        store.close()
    with pytest.raises(StoreError) as bad:
        RedisStore("http://user:s3cret-pass@127.0.0.1:1/")
    assert "s3cret-pass" not in bad.value.description and "***" in bad.value.description


# -- revocations and counters ---------------------------------------------------------------------


def test_revoked_tokens_expire_and_are_trimmed_after_a_margin(open_store: OpenStore, raw: redis.Redis) -> None:
    a, b = open_store(), open_store()
    zset = f"{{{a.namespace}}}:revoked"
    a.revoke_token("j1", 1000.0)
    a.revoke_token("j2", 1700000000.123456)
    assert b.revoked_tokens(999.5) == {"j1": 1000.0, "j2": 1700000000.123456}  # exact floats, shared
    assert b.revoked_tokens(1000.0) == {"j2": 1700000000.123456}  # expired at its expiry (exp > now)
    # Expired but kept for the trim margin: a replica whose clock lags still refuses the token.
    assert raw.zscore(zset, "j1") == 1000.0
    assert a.revoked_tokens(999.0) == {"j1": 1000.0, "j2": 1700000000.123456}
    b.revoked_tokens(1000.0 + REVOKED_TRIM_MARGIN + 1)
    assert raw.zscore(zset, "j1") is None and raw.zscore(zset, "j2") is not None
    # Re-revoking: an earlier expiry never shortens a revocation, a later one extends it.
    a.revoke_token("j3", 5000.0)
    a.revoke_token("j3", 4000.0)
    assert a.revoked_tokens(0.0)["j3"] == 5000.0
    a.revoke_token("j3", 6000.0)
    assert a.revoked_tokens(0.0)["j3"] == 6000.0
    assert raw.ttl(zset) == -1  # the list itself never expires: only its entries do


def test_auth_failure_counters_expire_and_do_not_bump_the_revision(open_store: OpenStore, raw: redis.Redis) -> None:
    store = open_store()
    r0 = store.revision()
    store.record_auth_failure(["client:c1"], 100.0)
    store.record_auth_failure(["client:c1"], 100.0)  # same instant: still two failures
    store.record_auth_failure(["client:c1"], 100.0 + AUTH_FAILURE_RETENTION + 1)  # trims the first two
    fk = f"{{{store.namespace}}}:fail:client:c1"
    assert 0 < raw.ttl(fk) <= AUTH_FAILURE_RETENTION
    assert raw.zcard(fk) == 1
    assert store.auth_failures(["client:c1"], since=0.0) == {"client:c1": (1, 100.0 + AUTH_FAILURE_RETENTION + 1)}
    assert store.revision() == r0 and store.is_empty()


def test_the_index_of_failing_keys_is_trimmed_and_expires_with_the_counters(
    open_store: OpenStore, raw: redis.Redis
) -> None:
    store = open_store()
    store.record_auth_failure(["client:c1", "addr:1"], 100.0)
    # A replica whose clock runs up to FAILING_TRIM_MARGIN ahead trims nothing another has just recorded...
    store.record_auth_failure(["addr:2"], 100.0 + AUTH_FAILURE_RETENTION + FAILING_TRIM_MARGIN)
    index = f"{{{store.namespace}}}:failing"
    assert store.failing_keys(99.0, 10) == {"client:c1", "addr:1", "addr:2"}
    # ... and past both, an entry is trimmed.
    late = 100.0 + AUTH_FAILURE_RETENTION + FAILING_TRIM_MARGIN + 1
    store.record_auth_failure(["addr:1"], late)  # trims client:c1 from the index
    assert raw.zrange(index, 0, -1, withscores=True) == [
        ("addr:2", 100.0 + AUTH_FAILURE_RETENTION + FAILING_TRIM_MARGIN),
        ("addr:1", late),
    ]
    assert 0 < raw.ttl(index) <= AUTH_FAILURE_RETENTION + FAILING_TRIM_MARGIN
    store.record_auth_failure(["addr:1"], 50.0)  # a replica whose clock is behind: the newest time stays
    assert raw.zscore(index, "addr:1") == late
    assert store.failing_keys(0.0, 10) == {"addr:1", "addr:2"}


def test_paging_indexes_the_clients_of_a_store_from_before_the_index(open_store: OpenStore, raw: redis.Redis) -> None:
    store = open_store()
    for i in ("a", "b", "c", "d"):
        store.put_client(client(i))
    index = f"{{{store.namespace}}}:client_index"
    raw.delete(index)  # a store written before the index
    assert [c.client_id for c in store.list_clients_after("", 2)] == ["a", "b"]
    assert raw.zcard(index) == 4
    # A version before the index deletes "a": the set and the index disagree in count, the index is made again.
    raw.srem(f"{{{store.namespace}}}:clients", "a")
    raw.delete(f"{{{store.namespace}}}:client:a")
    assert [c.client_id for c in store.list_clients_after("", 10)] == ["b", "c", "d"]
    # An id in the index whose record is gone (deleted between the two reads of a page): skipped, and
    # the page filled from further on.
    raw.zadd(index, {"bb": 0})
    assert [c.client_id for c in store.list_clients_after("b", 1)] == ["c"]


# -- change propagation ---------------------------------------------------------------------------


class Changes:
    """Collects on_change calls from the subscription thread."""

    def __init__(self) -> None:
        self.seen: queue.Queue[int] = queue.Queue()

    def __call__(self, revision: int) -> None:
        self.seen.put(revision)

    def wait_for(self, revision: int, timeout: float) -> float:
        start = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - start)
            try:
                if self.seen.get(timeout=max(0.0, left)) >= revision:
                    return time.monotonic() - start
            except queue.Empty:
                raise AssertionError(f"revision {revision} not notified within {timeout}s") from None

    def drain(self) -> list[int]:
        out: list[int] = []
        while not self.seen.empty():
            out.append(self.seen.get_nowait())
        return out


def test_a_write_on_one_store_notifies_another_within_a_second(open_store: OpenStore) -> None:
    writer, reader = open_store(), open_store()
    changes = Changes()
    stop = reader.subscribe(changes)
    changes.wait_for(0, timeout=2)  # the catch-up call once subscribed
    for write in (
        lambda: writer.save_keyset(keyset(key("a")), 0),
        lambda: writer.put_client(client("c1")),
        lambda: writer.revoke_token("j1", 9e9),
        lambda: writer.append_audit([event("x")]),
        lambda: writer.delete_client("c1"),
    ):
        write()
        assert changes.wait_for(writer.revision(), timeout=1.0) < 1.0
    writer.record_auth_failure(["addr:1"], 1.0)  # not a change: no notification
    writer.record_fetches([Fetch("orders/1", '"e"', 1.0)], {'"e"': ["a"]}, 1.0, 3600, 10)  # nor is a fetch
    time.sleep(0.3)
    assert changes.drain() == []
    stop()
    assert not any(t.name == f"redis-changes-{reader.namespace}" for t in threading.enumerate())
    writer.append_audit([event("after stop")])
    time.sleep(0.3)
    assert changes.drain() == []


def test_a_failing_callback_does_not_end_the_subscription(open_store: OpenStore) -> None:
    writer, reader = open_store(), open_store()
    changes = Changes()
    calls = 0

    def flaky(revision: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("callback bug")
        changes(revision)

    reader.subscribe(flaky)
    time.sleep(0.2)
    writer.append_audit([event("x")])
    changes.wait_for(writer.revision(), timeout=1.0)
    reader.close()  # close stops the subscription thread too
    assert not any(t.name == f"redis-changes-{reader.namespace}" for t in threading.enumerate())


@pytest.mark.parametrize("redis_target", ["plain"], indirect=True)  # restart_redis restarts the plain server
def test_the_subscription_resumes_after_a_redis_restart(
    open_store: OpenStore, restart_redis: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = open_store(), open_store()
    changes = Changes()
    reader.subscribe(changes)
    writer.append_audit([event("before")])
    changes.wait_for(writer.revision(), timeout=1.0)

    def while_down() -> None:
        with pytest.raises(StoreError, match="unreachable"):
            writer.revision()
        time.sleep(1.0)  # long enough for the subscriber to give up its connection and back off

    with caplog.at_level(logging.INFO, logger="jwks_service.stores.redis"):
        restart_redis(while_down)  # a crash: the data is gone too (no persistence), revisions start again
        changes.drain()
        writer.append_audit([event("after")])  # the writer's pooled connection is stale: it reconnects
        target = writer.revision()
        assert target == 1
        changes.wait_for(target, timeout=5.0)
    assert "change subscription to Redis" in caplog.text and "lost" in caplog.text and "resumed" in caplog.text
    writer.append_audit([event("again")])
    assert changes.wait_for(writer.revision(), timeout=1.0) < 1.0
