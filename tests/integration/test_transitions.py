"""Transitions under contention and failure: compare-and-set across processes, canary validation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from jwks_service.clock import ManualClock
from jwks_service.lifecycle import check_invariants
from jwks_service.model import KeyState
from jwks_service.runtime import Runtime

POLICY = {"rotation_period": "2h", "prepublish": "10m", "token_ttl": "15m", "leeway": "30s"}


def test_concurrent_schedulers_rotate_exactly_once(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> None:
    replicas = [runtime_factory({"default": {"alg": "ES256", **POLICY}}) for _ in range(4)]
    before = replicas[0].store.get_keyset("default")
    assert before is not None
    clock.advance(2 * 3600)
    barrier = threading.Barrier(len(replicas))
    results: list[int] = []

    def run(rt: Runtime) -> None:
        barrier.wait()
        results.append(len([t for t in rt.keys.tick() if t.event == "rotated"]))

    threads = [threading.Thread(target=run, args=(rt,)) for rt in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 2]  # one replica promoted next and demoted current; the rest saw it done
    after = replicas[0].store.get_keyset("default")
    assert after is not None
    assert after.revision == before.revision + 1
    assert check_invariants(after.keys) == []
    assert [k.state for k in after.keys].count(KeyState.NEXT) == 1
    rotations = [e for e in replicas[0].store.list_audit() if e.action == "key.rotated"]
    assert len(rotations) == 2


def test_concurrent_revocations_make_one_new_current(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    replicas = [runtime_factory({"default": {"alg": "ES256", **POLICY}}) for _ in range(3)]
    ks = replicas[0].store.get_keyset("default")
    assert ks is not None and ks.current is not None
    kid = ks.current.kid
    barrier = threading.Barrier(len(replicas))

    def run(rt: Runtime) -> None:
        barrier.wait()
        rt.keys.revoke(kid, reason="leak", actor="test")

    threads = [threading.Thread(target=run, args=(rt,)) for rt in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = replicas[0].store.get_keyset("default")
    assert after is not None
    assert after.revision == ks.revision + 1
    assert check_invariants(after.keys) == []
    created = [
        e
        for e in replicas[0].store.list_audit()
        if e.action == "key.created" and e.target not in {k.kid for k in ks.keys}
    ]
    assert len(created) == 1  # exactly one new next key


def test_key_failing_its_canary_is_never_promoted(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> None:
    rt = runtime_factory({"default": {"alg": "ES256", **POLICY}})
    ks = rt.store.get_keyset("default")
    assert ks is not None and ks.current is not None and ks.next is not None
    # Corrupt the published public key of `next` (as a broken store or backend would): its
    # signatures no longer verify with what verifiers would download.
    broken = replace(ks.next, public_jwk=ks.current.public_jwk)
    keys = tuple(broken if k.kid == broken.kid else k for k in ks.keys)
    rt.store.save_keyset(replace(ks, keys=keys), ks.revision)
    rt.keys.refresh()
    current = ks.current.kid
    clock.advance(2 * 3600)
    rt.keys.tick()
    after = rt.store.get_keyset("default")
    assert after is not None and after.current is not None and after.next is not None
    assert after.current.kid == current  # no rotation onto a broken key
    discarded = after.find(broken.kid)
    assert discarded is not None and discarded.state == KeyState.RETIRED and discarded.sealed_private is None
    assert after.next.kid != broken.kid
    assert rt.keys.canary_failures == 1
    failures = [e for e in rt.store.list_audit() if e.action == "key.validate"]
    assert failures and failures[0].outcome == "failed" and failures[0].target == broken.kid
    # The fresh next key goes through prepublish again before it signs.
    clock.advance(5 * 60)
    rt.keys.tick()
    assert rt.keys.snapshot.signing["default"].kid == current
    clock.advance(5 * 60)
    rt.keys.tick()
    assert rt.keys.snapshot.signing["default"].kid == after.next.kid


def test_store_that_lost_its_keysets_gets_them_back(runtime_factory: Callable[..., Runtime], tmp_path: Path) -> None:
    """A store emptied under a running replica (Redis restarted without persistence): the replica
    writes back the keys it serves instead of letting the scheduler orphan every live token."""
    rt = runtime_factory({"default": {"alg": "ES256", **POLICY}})
    served = rt.keys.snapshot.keysets["default"]
    db = sqlite3.connect(tmp_path / "jwks.db")
    with db:
        db.execute("DELETE FROM keys")
        db.execute("DELETE FROM keysets")
        db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
    db.close()
    rt.keys.refresh()
    rt.keys.tick()
    restored = rt.store.get_keyset("default")
    assert restored is not None
    assert sorted(k.kid for k in restored.keys) == sorted(k.kid for k in served.keys)
    assert rt.keys.snapshot.signing["default"].kid == served.current.kid  # type: ignore[union-attr]
    assert [e.action for e in rt.store.list_audit(limit=1)] == ["keyset.reseed"]


class _PausingStore:
    """A replica's store that, once armed, stops its next `get_keyset` after the read: the moment
    between the scheduler reading a keyset and serving it."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.armed = False
        self.read = threading.Event()
        self.go_on = threading.Event()

    def get_keyset(self, name: str) -> object:
        keyset = self._inner.get_keyset(name)  # type: ignore[attr-defined]
        if self.armed:
            self.armed = False
            self.read.set()
            assert self.go_on.wait(10)
        return keyset

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_stale_read_never_undoes_a_revocation_served_since(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    """The reload and the scheduler run in separate threads. Replica A's scheduler reads the keyset;
    replica B revokes its current key; A's reload serves that; then A's scheduler serves what it had
    read. The older copy must not replace the newer one: the revoked key would sign again."""
    a = runtime_factory({"default": {"alg": "ES256", **POLICY}})
    b = runtime_factory({"default": {"alg": "ES256", **POLICY}})
    clock.advance(2 * 3600)
    assert [t for t in b.keys.tick() if t.event == "rotated"]  # B makes the scheduled rotation
    pausing = _PausingStore(a.keys.store)
    a.keys.rotation.store = pausing  # type: ignore[assignment]
    pausing.armed = True
    tick = threading.Thread(target=a.keys.tick)  # A's copy is older: its plan says rotate, it reads again
    tick.start()
    try:
        assert pausing.read.wait(10)
        current = b.keys.snapshot.signing["default"].kid
        b.keys.revoke(current, reason="leaked")
        assert a.keys.refresh()  # A's reload serves the revocation
        assert a.keys.snapshot.signing["default"].kid != current
    finally:
        pausing.go_on.set()
        tick.join(10)
    assert a.keys.snapshot.signing["default"].kid != current
    assert current not in a.keys.snapshot.verify_keys
