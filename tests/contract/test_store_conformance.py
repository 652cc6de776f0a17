"""The Store conformance suite. Every store implementation runs these tests unchanged:
add a factory to STORE_FACTORIES and it is held to the same contract."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from jwks_service.adoption import Fetch
from jwks_service.errors import RevisionConflictError
from jwks_service.model import AuditChain, AuditEvent, Client, Keyset, KeyState, KeyVersion, SecretHash, event_hash
from jwks_service.stores import Store
from jwks_service.stores.redis import RedisStore
from jwks_service.stores.sqlite import MAX_REVISIONS, SQLiteStore


def redis_opener(topology: str) -> StoreFactory:
    """Stores on one Redis topology (tests/contract/conftest.py: plain, TLS, Cluster, Sentinel).

    One namespace per test, derived from its tmp_path: every store a test opens shares it, and no
    other test (nor another run against the same $REDIS_URL) sees it. Its keys are deleted afterwards."""

    def opener(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Store]:
        target = request.getfixturevalue(f"redis_{topology}")
        namespace = "test-" + hashlib.sha256(str(tmp.resolve()).encode()).hexdigest()[:16]

        def cleanup() -> None:
            r = target.client()
            try:
                keys = list(r.scan_iter(match=f"{{{namespace}}}:*", count=1000))
                if keys:
                    r.delete(*keys)
            finally:
                r.close()

        request.addfinalizer(cleanup)
        return lambda: RedisStore(target.url, target.settings, namespace=namespace)

    return opener


# Given the test's request and its tmp_path, each factory returns an opener of stores on one shared
# location (resolved while the test is set up, so a factory may use fixtures such as redis_url).
StoreFactory = Callable[[pytest.FixtureRequest, Path], Callable[[], Store]]
STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda request, tmp: lambda: SQLiteStore(tmp / "store.db"),
    "redis": redis_opener("plain"),
    "redis-tls": redis_opener("tls"),
    "redis-cluster": redis_opener("cluster"),
    "redis-sentinel": redis_opener("sentinel"),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens stores on one shared location: two calls are two processes' views of one store."""
    opener = STORE_FACTORIES[request.param](request, tmp_path)
    opened: list[Store] = []

    def make() -> Store:
        store = opener()
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()


def key(kid: str, state: KeyState = KeyState.CURRENT, t: float = 1000.0, **kw: object) -> KeyVersion:
    return KeyVersion(
        kid=kid,
        keyset="default",
        alg="ES256",
        state=state,
        created_at=t,
        public_jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
        sealed_private=b"\x01sealed\x00bytes",
        **kw,  # type: ignore[arg-type]
    )


def keyset(*keys: KeyVersion, revision: int = 0) -> Keyset:
    return Keyset("default", "ES256", "local", revision, keys)


def test_missing_keyset_is_none(store: Store) -> None:
    assert store.get_keyset("default") is None
    assert store.list_keysets() == []


def test_create_then_read_round_trips_every_field(store: Store) -> None:
    k = key("a", activated_at=1001.5, retire_at=None, revoke_reason="", tainted_at=1001.75)
    nxt = key("b", KeyState.NEXT, 1002.0)
    assert nxt.tainted_at is None
    saved = store.save_keyset(keyset(k, nxt), 0)
    assert saved.revision == 1
    loaded = store.get_keyset("default")
    assert loaded is not None
    assert loaded.revision == 1
    assert sorted(loaded.keys, key=lambda v: v.kid) == [k, nxt]
    assert loaded.find("a") == k
    assert [ks.name for ks in store.list_keysets()] == ["default"]


def test_create_twice_conflicts(store: Store) -> None:
    store.save_keyset(keyset(key("a")), 0)
    with pytest.raises(RevisionConflictError):
        store.save_keyset(keyset(key("z")), 0)
    loaded = store.get_keyset("default")
    assert loaded is not None and [k.kid for k in loaded.keys] == ["a"]


def test_compare_and_set_on_revision(store: Store) -> None:
    store.save_keyset(keyset(key("a")), 0)
    store.save_keyset(keyset(key("a"), key("b", KeyState.NEXT)), 1)
    with pytest.raises(RevisionConflictError):
        store.save_keyset(keyset(key("c")), 1)  # stale writer
    loaded = store.get_keyset("default")
    assert loaded is not None and loaded.revision == 2
    assert {k.kid for k in loaded.keys} == {"a", "b"}


def test_keyset_claim_round_trips_and_is_compare_and_set(store: Store) -> None:
    """A remote backend's claim (see rotation.Rotation._claim) lives in the keyset record: the version
    mark stays, the claim time clears, and both move only with a winning compare-and-set."""
    claimed = store.save_keyset(replace(keyset(key("a")), claimed_version=7, claimed_at=1700000000.25), 0)
    assert (claimed.revision, claimed.claimed_version, claimed.claimed_at) == (1, 7, 1700000000.25)
    assert store.get_keyset("default") == claimed
    assert store.list_keysets() == [claimed]
    with pytest.raises(RevisionConflictError):
        store.save_keyset(replace(claimed, claimed_version=9, claimed_at=5.0), 0)
    released = store.save_keyset(replace(claimed, claimed_at=None), 1)
    loaded = store.get_keyset("default")
    assert loaded == released and loaded is not None and (loaded.claimed_version, loaded.claimed_at) == (7, None)
    store.save_keyset(keyset(key("b"), revision=2), 2)  # a record is written as given, claim fields too
    again = store.get_keyset("default")
    assert again is not None and (again.claimed_version, again.claimed_at) == (0, None)


def test_save_replaces_key_set_and_drops_material(store: Store) -> None:
    store.save_keyset(keyset(key("a"), key("b", KeyState.NEXT)), 0)
    retired = key("a", KeyState.RETIRED).with_(sealed_private=None, retired_at=2000.0)
    store.save_keyset(keyset(retired, key("b")), 1)
    loaded = store.get_keyset("default")
    assert loaded is not None
    a = loaded.find("a")
    assert a is not None and a.sealed_private is None and a.state == KeyState.RETIRED


def race(stores: list[Store], write: Callable[[int, Store], object]) -> tuple[list[int], list[int]]:
    """Every store's `write` at once (one thread each, released together): who won, who lost
    the compare-and-set (RevisionConflictError)."""
    wins: list[int] = []
    losses: list[int] = []
    barrier = threading.Barrier(len(stores))

    def writer(i: int, s: Store) -> None:
        barrier.wait()
        try:
            write(i, s)
            wins.append(i)
        except RevisionConflictError:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins, losses


def test_concurrent_writers_exactly_one_wins(make_store: Callable[[], Store]) -> None:
    first = make_store()
    first.save_keyset(keyset(key("a")), 0)
    stores = [make_store() for _ in range(6)]
    wins, losses = race(stores, lambda i, s: s.save_keyset(keyset(key("a"), key(f"n{i}", KeyState.NEXT)), 1))
    assert len(wins) == 1 and len(losses) == len(stores) - 1
    loaded = first.get_keyset("default")
    assert loaded is not None and loaded.revision == 2 and {k.kid for k in loaded.keys} == {"a", f"n{wins[0]}"}


def test_revision_counter_grows_with_every_write_and_is_shared(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    r0 = b.revision()
    a.save_keyset(keyset(key("a")), 0)
    r1 = b.revision()
    assert r1 > r0
    a.put_client(client("c1"))
    r2 = b.revision()
    assert r2 > r1
    a.revoke_token("jti-1", 5000.0)
    assert b.revision() > r2


def client(client_id: str, **kw: object) -> Client:
    return Client(
        client_id=client_id,
        name="svc",
        scopes=("read", "write"),
        audiences=("api",),
        keyset="default",
        token_ttl=900,
        created_at=100.0,
        secrets=(SecretHash(b"\x01" * 32, 100.0), SecretHash(b"\x02" * 32, 50.0, expires_at=200.0)),
        **kw,  # type: ignore[arg-type]
    )


def test_clients_crud(store: Store) -> None:
    assert store.get_client("nope") is None
    c = client("c1")
    store.put_client(c)
    assert store.get_client("c1") == c
    updated = replace(c, scopes=("read",), secrets=c.secrets[:1])
    store.put_client(updated)
    assert store.get_client("c1") == updated
    store.put_client(client("c2"))
    assert [x.client_id for x in store.list_clients()] == ["c1", "c2"]
    assert store.delete_client("c1") is True
    assert store.delete_client("c1") is False
    assert store.get_client("c1") is None


def pages(store: Store, limit: int, between: Callable[[], object] = lambda: None) -> list[list[str]]:
    """Every page of client ids, `between` called after each."""
    out: list[list[str]] = []
    after = ""
    while page := store.list_clients_after(after, limit):
        out.append([c.client_id for c in page])
        after = page[-1].client_id
        between()
    return out


def test_clients_are_listed_in_pages_after_an_id(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    ids = ["c07", "c01", "c03", "c05", "c02", "c06", "c04", "é", "Z", "c10"]
    for i in ids:
        a.put_client(client(i))
    in_order = sorted(ids)  # by code point: "Z" < "c01" < ... < "é"
    assert pages(b, 3) == [in_order[0:3], in_order[3:6], in_order[6:9], in_order[9:]]
    assert [c.client_id for c in b.list_clients_after("c035", 2)] == ["c04", "c05"]  # after any string
    assert b.list_clients_after("c04", 1) == [a.get_client("c05")]  # whole records
    assert [c.client_id for c in b.list_clients_after("", 2**70)] == in_order
    assert b.list_clients_after("", 0) == [] and b.list_clients_after("", -5) == []
    assert b.list_clients_after("é", 10) == []
    a.delete_client("c03")
    assert [c.client_id for c in b.list_clients_after("c02", 2)] == ["c04", "c05"]


def test_paging_lists_each_client_once_while_clients_come_and_go(make_store: Callable[[], Store]) -> None:
    writer, reader = make_store(), make_store()
    rng = random.Random(16)
    alive = {f"{rng.getrandbits(40):010x}" for _ in range(60)}
    for i in alive:
        writer.put_client(client(i))
    throughout, ever = set(alive), set(alive)

    def churn() -> None:
        for _ in range(3):
            gone = rng.choice(sorted(alive))
            assert writer.delete_client(gone)
            alive.discard(gone)
            throughout.discard(gone)
            new = f"{rng.getrandbits(40):010x}"
            writer.put_client(client(new))
            alive.add(new)
            ever.add(new)
        changed = rng.choice(sorted(alive))  # an update moves nothing
        writer.put_client(replace(client(changed), name="renamed"))

    listed = [i for page in pages(reader, 7, churn) for i in page]
    assert listed == sorted(set(listed))  # in order, none twice
    assert throughout <= set(listed) <= ever  # all that stayed; nothing that never was


def test_client_compare_and_set(store: Store) -> None:
    created = store.save_client(client("c1"), 0, [AuditEvent(at=1.0, actor="t", action="client.create", target="c1")])
    assert created.revision == 1
    loaded = store.get_client("c1")
    assert loaded is not None and loaded.revision == 1 and loaded == client("c1")
    with pytest.raises(RevisionConflictError):
        store.save_client(client("c1"), 0)  # expected 0: must not exist yet
    rotated = store.save_client(replace(loaded, secrets=loaded.secrets[:1]), 1)
    assert rotated.revision == 2
    with pytest.raises(RevisionConflictError):
        store.save_client(replace(loaded, name="stale"), 1, [AuditEvent(at=2.0, actor="t", action="lost", target="c1")])
    stored = store.get_client("c1")
    assert stored is not None and stored.revision == 2 and stored.name == "svc" and stored.secrets == loaded.secrets[:1]
    assert [e.action for e in store.list_audit()] == ["client.create"]  # a lost compare-and-set writes no audit


def test_every_client_write_moves_its_revision(store: Store) -> None:
    store.put_client(client("c1"))
    first = store.get_client("c1")
    assert first is not None and first.revision >= 1
    store.put_client(replace(first, name="renamed"))  # an unconditional write (a restored backup) counts too
    second = store.get_client("c1")
    assert second is not None and second.revision > first.revision
    with pytest.raises(RevisionConflictError):
        store.save_client(replace(first, name="stale"), first.revision)
    assert [c.revision for c in store.list_clients()] == [second.revision]


def test_deleted_client_is_not_brought_back_by_a_stale_writer(store: Store) -> None:
    """A secret rotation that read the client before a deletion must not write it back."""
    saved = store.save_client(client("c1"), 0)
    assert store.delete_client("c1") is True
    with pytest.raises(RevisionConflictError):
        store.save_client(replace(saved, name="resurrected"), saved.revision)
    assert store.get_client("c1") is None
    assert store.save_client(client("c1"), 0).revision == 1  # a new client of that id starts over


def test_concurrent_client_writers_exactly_one_wins(make_store: Callable[[], Store]) -> None:
    first = make_store()
    base = first.save_client(client("c1"), 0)
    stores = [make_store() for _ in range(6)]
    wins, losses = race(stores, lambda i, s: s.save_client(replace(base, name=f"w{i}"), base.revision))
    assert len(wins) == 1 and len(losses) == len(stores) - 1
    loaded = first.get_client("c1")
    assert loaded is not None and loaded.revision == 2 and loaded.name == f"w{wins[0]}"


def test_revoked_tokens_expire(store: Store) -> None:
    store.revoke_token("j1", 1000.0)
    store.revoke_token("j2", 3000.0)
    store.revoke_token("j2", 2000.0)  # an earlier expiry never shortens a revocation
    assert store.revoked_tokens(500.0) == {"j1": 1000.0, "j2": 3000.0}
    assert store.revoked_tokens(1500.0) == {"j2": 3000.0}


def test_audit_is_ordered_newest_first_and_written_with_changes(store: Store) -> None:
    events = [AuditEvent(at=float(i), actor="cli", action="test", target=f"t{i}", details={"n": i}) for i in range(5)]
    store.append_audit(events[:3])
    store.save_keyset(keyset(key("a")), 0, events[3:4])
    store.put_client(client("c1"), events[4:5])
    listed = store.list_audit()
    assert [e.target for e in listed] == ["t4", "t3", "t2", "t1", "t0"]
    assert listed[0].details == {"n": 4} and listed[0].id > listed[1].id
    assert [e.target for e in store.list_audit(since=3.0)] == ["t4", "t3"]
    assert [e.target for e in store.list_audit(limit=2)] == ["t4", "t3"]


def test_audit_takes_any_limit(store: Store) -> None:
    """A limit means "at most this many", however large (`backup export` asks for all of them) or small."""
    store.append_audit([AuditEvent(at=float(i), actor="cli", action="test", target=f"t{i}") for i in range(3)])
    for limit in (3, 2**31, 2**53 + 1, 2**62, 2**64, 10**30):
        assert [e.target for e in store.list_audit(limit=limit)] == ["t2", "t1", "t0"], limit
        assert [e.target for e in store.list_audit(since=1.0, limit=limit)] == ["t2", "t1"], limit
    assert store.list_audit(limit=0) == [] and store.list_audit(limit=-(2**70)) == []


def test_audit_prune_deletes_the_oldest_events_in_bounded_batches(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    # Pruning deletes the oldest events by id, and stops at the first one at or after `before` (an
    # event stamped late by a replica whose clock ran ahead holds back the ones after it), so the
    # events kept are always a whole chain.
    ats = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 2.5, 7.0, 8.0, 9.0]
    a.append_audit([AuditEvent(at=t, actor="x", action="test", target=f"t{t:g}") for t in ats])
    r0 = a.revision()
    assert a.prune_audit(before=5.0, limit=3) == 3  # bounded: three of the five older events
    assert [e.target for e in b.list_audit(limit=100)][::-1] == ["t3", "t4", "t6", "t2.5", "t7", "t8", "t9"]
    assert b.prune_audit(before=5.0, limit=3) == 2
    assert a.prune_audit(before=5.0, limit=3) == 0  # t6 holds back t2.5
    assert a.prune_audit(before=100.0, limit=0) == 0
    remaining = b.list_audit(limit=100)
    assert [e.at for e in remaining][::-1] == [6.0, 2.5, 7.0, 8.0, 9.0]
    assert a.prune_audit(before=6.0, limit=3) == 0  # `at` == before is kept
    assert [e.target for e in a.list_audit(since=7.0)] == ["t9", "t8", "t7"]  # newest (by id) first
    assert a.revision() == r0  # housekeeping: nothing for other replicas to reload
    assert a.prune_audit(before=100.0, limit=1000) == 5
    assert a.list_audit() == [] and a.is_empty()
    # Ids keep growing after a prune: a new event is newer than every pruned one.
    a.append_audit([AuditEvent(at=1.0, actor="x", action="test", target="new")])
    assert b.list_audit()[0].id > max(e.id for e in remaining)


def test_audit_events_are_chained_by_every_write(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    heard: list[AuditEvent] = []
    a.audit_tap.listen(heard.extend)
    a.append_audit([AuditEvent(at=1.0, actor="x", action="test", target="t1", prev="ignored", id=99)])
    a.save_client(client("c1"), 0, [AuditEvent(at=2.0, actor="x", action="client.create", target="c1")])
    with pytest.raises(RevisionConflictError):
        a.save_client(client("c2"), 5, [AuditEvent(at=2.5, actor="x", action="lost", target="c2")])
    assert not a.delete_client("nobody", [AuditEvent(at=2.6, actor="x", action="client.delete", target="nobody")])
    b.save_keyset(Keyset("ks", "ES256", "local", 0, ()), 0, [AuditEvent(at=3.0, actor="y", action="key.x", target="k")])
    events = a.list_audit_after(0, 100)
    assert [(e.id, e.target) for e in events] == [(1, "t1"), (2, "c1"), (3, "k")]  # the store numbers them
    assert events[0].prev == ""
    assert [e.prev for e in events[1:]] == [event_hash(e) for e in events[:-1]]
    assert a.audit_chain() == AuditChain(1, "", 3, event_hash(events[2]))
    assert heard == events[:2]  # what this store object committed, as stored; nothing for lost writes
    assert a.list_audit(before_id=3) == events[1::-1] and a.list_audit(since=2.0, before_id=3) == [events[1]]
    assert a.list_audit_after(1, 1) == [events[1]] and a.list_audit_after(3) == []


def test_concurrent_audit_appends_keep_one_chain(make_store: Callable[[], Store]) -> None:
    stores = [make_store(), make_store()]

    def append(store: Store, who: str) -> None:
        for i in range(25):
            store.append_audit([AuditEvent(at=float(i), actor=who, action="race", target=str(i))])

    threads = [threading.Thread(target=append, args=(s, f"w{n}")) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = stores[0].list_audit_after(0, 100)
    assert [e.id for e in events] == list(range(1, 51))
    assert [e.prev for e in events[1:]] == [event_hash(e) for e in events[:-1]]


def test_failed_compare_and_set_writes_no_audit(store: Store) -> None:
    store.save_keyset(keyset(key("a")), 0)
    with pytest.raises(RevisionConflictError):
        store.save_keyset(keyset(key("b")), 0, [AuditEvent(at=1.0, actor="x", action="lost", target="t")])
    assert [e.action for e in store.list_audit()] == []


def test_auth_failures_count_per_key_within_a_window(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    r0 = a.revision()
    for t in (100.0, 110.0, 120.0):
        a.record_auth_failure(["client:1.2.3.4", "addr:1.2.3.4"], t)
    b.record_auth_failure(["addr:1.2.3.4"], 130.0)
    assert a.revision() == r0  # counters are not changes other replicas need to reload for
    assert b.auth_failures(["client:1.2.3.4", "addr:1.2.3.4", "addr:9.9.9.9"], since=0.0) == {
        "client:1.2.3.4": (3, 100.0),
        "addr:1.2.3.4": (4, 100.0),
    }
    assert a.auth_failures(["addr:1.2.3.4"], since=105.0) == {"addr:1.2.3.4": (3, 110.0)}
    assert a.auth_failures([], since=0.0) == {}


def test_failing_keys_are_the_keys_with_failures_after_since(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    r0 = a.revision()
    assert b.failing_keys(0.0, 10) == set()
    a.record_auth_failure(["client:c1|1.2.3.4", "addr:1.2.3.4"], 100.0)
    a.record_auth_failure(["client:c2|5.6.7.8", "addr:5.6.7.8"], 150.0)
    b.record_auth_failure(["addr:1.2.3.4"], 160.0)
    assert a.revision() == r0  # not a change
    everything = {"client:c1|1.2.3.4", "addr:1.2.3.4", "client:c2|5.6.7.8", "addr:5.6.7.8"}
    assert b.failing_keys(99.0, 10) == everything  # every replica's failures
    assert a.failing_keys(100.0, 10) == everything - {"client:c1|1.2.3.4"}  # strictly after `since`
    assert a.failing_keys(155.0, 10) == {"addr:1.2.3.4"}  # by its newest failure
    assert a.failing_keys(160.0, 10) == set()
    assert a.failing_keys(99.0, 4) == everything  # exactly `limit` of them
    assert a.failing_keys(99.0, 3) is None  # more: "too many", not a part of them
    assert a.failing_keys(155.0, 1) == {"addr:1.2.3.4"}
    assert a.failing_keys(99.0, 0) is None


def test_failing_keys_past_the_limit_are_too_many_whatever_the_count(make_store: Callable[[], Store]) -> None:
    store = make_store()
    for i in range(300):
        store.record_auth_failure([f"addr:10.0.{i // 256}.{i % 256}"], 1000.0 + i / 100)
    assert store.failing_keys(0.0, 299) is None
    assert len(store.failing_keys(0.0, 300) or ()) == 300
    assert store.failing_keys(1002.985, 299) == {"addr:10.0.1.43"}


def test_an_assertion_jti_is_remembered_once_across_replicas(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    r0 = a.revision()
    assert a.remember_jti("c1", "j1", 1060.0, 1000.0) is True
    assert b.remember_jti("c1", "j1", 1060.0, 1001.0) is False  # the other replica sees the replay
    assert a.remember_jti("c1", "j1", 1060.0, 1002.0) is False
    assert b.remember_jti("c2", "j1", 1060.0, 1000.0) is True  # a jti is per client
    assert a.remember_jti("c1", "j2", 1060.0, 1000.0) is True
    assert a.revision() == r0 and a.is_empty()  # housekeeping: no change for replicas to reload


def test_assertion_jtis_are_forgotten_once_expired(store: Store) -> None:
    now = time.time()
    assert store.remember_jti("c1", "short", now + 0.2, now) is True
    assert store.remember_jti("c1", "long", now + 60, now) is True
    time.sleep(0.3)  # Redis expires by its own clock; SQLite prunes by `now`
    assert store.remember_jti("c1", "short", now + 60.3, now + 0.3) is True
    assert store.remember_jti("c1", "long", now + 60.3, now + 0.3) is False


def test_concurrent_replays_of_one_jti_are_accepted_once(make_store: Callable[[], Store]) -> None:
    stores = [make_store() for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(s: Store) -> None:
        barrier.wait()
        results.append(s.remember_jti("c1", "raced", 2000.0, 1000.0))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


def test_is_empty(store: Store) -> None:
    assert store.is_empty()
    store.append_audit([AuditEvent(at=1.0, actor="x", action="y", target="z")])
    assert not store.is_empty()


# ----- adoption records (API.md §6) --------------------------------------------------------------

WINDOW = 3600
REV_A, REV_B = '"aaaa"', '"bbbb"'


def test_fetches_are_recorded_and_listed(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    before = a.revision()
    a.record_fetches(
        [Fetch("orders/1", REV_A, 100.0), Fetch("10.0.0.1 curl/8", REV_B, 101.0)],
        {REV_A: ["k1"], REV_B: ["k1", "k2"]},
        now=101.0,
        window=WINDOW,
        max_fetchers=100,
    )
    assert b.list_fetches(0.0) == [Fetch("orders/1", REV_A, 100.0), Fetch("10.0.0.1 curl/8", REV_B, 101.0)]
    assert b.list_fetches(100.5) == [Fetch("10.0.0.1 curl/8", REV_B, 101.0)]
    assert b.list_revisions() == {REV_A: ["k1"], REV_B: ["k1", "k2"]}
    assert a.revision() == before  # not a change of state
    assert a.list_audit() == []
    assert a.is_empty()


def test_a_later_fetch_wins_whatever_the_order_of_flushes(make_store: Callable[[], Store]) -> None:
    a, b = make_store(), make_store()
    a.record_fetches([Fetch("orders/1", REV_B, 200.0)], {REV_B: ["k2"]}, now=200.0, window=WINDOW, max_fetchers=10)
    b.record_fetches([Fetch("orders/1", REV_A, 150.0)], {REV_A: ["k1"]}, now=201.0, window=WINDOW, max_fetchers=10)
    assert a.list_fetches(0.0) == [Fetch("orders/1", REV_B, 200.0)]
    b.record_fetches([Fetch("orders/1", REV_A, 250.0)], {}, now=250.0, window=WINDOW, max_fetchers=10)
    assert a.list_fetches(0.0) == [Fetch("orders/1", REV_A, 250.0)]


def test_fetchers_expire_after_the_window(store: Store) -> None:
    store.record_fetches(
        [Fetch("old", REV_A, 400.0), Fetch("new", REV_A, 4000.0)], {}, now=4000.0, window=WINDOW, max_fetchers=10
    )
    assert [f.fetcher for f in store.list_fetches(0.0)] == ["old", "new"]  # 400 is at the window's edge
    store.record_fetches([], {}, now=4000.5, window=WINDOW, max_fetchers=10)
    assert [f.fetcher for f in store.list_fetches(0.0)] == ["new"]


def test_fetchers_beyond_the_bound_go_oldest_first(store: Store) -> None:
    fetches = [Fetch(f"f{i:02d}", REV_A, 1000.0 + i) for i in range(12)]
    store.record_fetches(fetches[6:], {}, now=1100.0, window=WINDOW, max_fetchers=8)
    store.record_fetches(fetches[:6], {}, now=1100.0, window=WINDOW, max_fetchers=8)
    assert store.list_fetches(0.0) == fetches[4:]
    # a fetcher that fetches again is young again
    store.record_fetches([Fetch("f04", REV_B, 1200.0)], {}, now=1200.0, window=WINDOW, max_fetchers=8)
    assert [f.fetcher for f in store.list_fetches(0.0)] == [f"f{i:02d}" for i in range(5, 12)] + ["f04"]


def test_an_unknown_revision_is_kept_but_names_no_kids(store: Store) -> None:
    store.record_fetches([Fetch("orders/1", '"gone"', 10.0)], {}, now=10.0, window=WINDOW, max_fetchers=10)
    assert store.list_fetches(0.0) == [Fetch("orders/1", '"gone"', 10.0)]
    assert store.list_revisions() == {}


def test_a_revision_keeps_the_kids_first_recorded_and_only_the_newest_are_kept(store: Store) -> None:
    store.record_fetches([], {REV_A: ["k1"]}, now=1.0, window=WINDOW, max_fetchers=10)
    store.record_fetches([], {REV_A: ["k9"]}, now=2.0, window=WINDOW, max_fetchers=10)
    assert store.list_revisions() == {REV_A: ["k1"]}
    for i in range(MAX_REVISIONS + 4):
        store.record_fetches([], {f'"r{i:04d}"': [f"k{i}"]}, now=10.0 + i, window=WINDOW, max_fetchers=10)
    kept = store.list_revisions()
    assert len(kept) == MAX_REVISIONS
    assert REV_A not in kept and '"r0000"' not in kept and '"r0003"' not in kept
    assert kept['"r0004"'] == ["k4"] and f'"r{MAX_REVISIONS + 3:04d}"' in kept


def test_a_flush_far_beyond_the_bound_keeps_the_newest(store: Store) -> None:
    fetches = [Fetch(f"f{i:05d}", REV_A, 1000.0 + i) for i in range(2500)]
    store.record_fetches(fetches, {REV_A: ["k1"]}, now=4000.0, window=WINDOW, max_fetchers=1000)
    assert store.list_fetches(0.0) == fetches[1500:]
