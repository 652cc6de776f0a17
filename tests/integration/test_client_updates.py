"""Client updates racing each other on one store, as two replicas (or a replica and the CLI) would.

Each registry is a separate process's view; a store wrapper runs the other writer between this
writer's read and its write, the interleaving that read-modify-write without compare-and-set loses.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from replicas import Fleet, Policy
from support import make_settings

from jwks_service.clients import ClientRegistry
from jwks_service.clock import ManualClock
from jwks_service.errors import ConflictError, InvalidClientError, NotFoundError
from jwks_service.model import Client
from jwks_service.stores import Store
from jwks_service.stores.redis import RedisStore
from jwks_service.stores.sqlite import SQLiteStore

PEPPER = b"p" * 32


class Interleave:
    """A store whose next `get_client` runs `between` after reading, before returning: another
    writer gets in between this writer's read and its write."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.between: Callable[[], None] | None = None

    def get_client(self, client_id: str) -> Client | None:
        found = self._store.get_client(client_id)
        between, self.between = self.between, None
        if between is not None:
            between()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []
    if request.param == "sqlite":

        def make() -> Store:
            return SQLiteStore(tmp_path / "store.db")

    else:
        url: str = request.getfixturevalue("redis_url")
        namespace = "test-" + hashlib.sha256(str(tmp_path.resolve()).encode()).hexdigest()[:16]

        def make() -> Store:
            return RedisStore(url, namespace=namespace)

    def opener() -> Store:
        store = make()
        opened.append(store)
        return store

    yield opener
    if request.param == "redis":
        import redis

        with redis.Redis.from_url(request.getfixturevalue("redis_url")) as r:
            keys = list(r.scan_iter(match=f"{{{namespace}}}:*", count=1000))
            if keys:
                r.delete(*keys)
    for s in opened:
        s.close()


def registry(store: Store | Interleave, clock: ManualClock, tmp_path: Path) -> ClientRegistry:
    return ClientRegistry(store, PEPPER, clock, make_settings(tmp_path).keysets)  # type: ignore[arg-type]


def works(reg: ClientRegistry, client_id: str, secret: str) -> bool:
    try:
        anyio.run(reg.authenticate_async, client_id, secret, "127.0.0.1")
    except InvalidClientError:
        return False
    return True


def test_interleaved_secret_rotations_both_return_working_secrets(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    a_store = Interleave(open_store())
    a, b = registry(a_store, clock, tmp_path), registry(open_store(), clock, tmp_path)
    client, original = a.create("svc", ["read"], ["api"])
    from_b: list[str] = []
    a_store.between = lambda: from_b.append(b.rotate_secret(client.client_id, 3600)[1])
    _, from_a = a.rotate_secret(client.client_id, 3600)
    assert len(from_b) == 1
    checker = registry(open_store(), clock, tmp_path)
    # Every secret a caller was given authenticates (the older ones within their grace).
    assert works(checker, client.client_id, from_a)
    assert works(checker, client.client_id, from_b[0])
    assert works(checker, client.client_id, original)
    clock.advance(3601)
    assert works(checker, client.client_id, from_a)  # the newest secret has no expiry
    assert not works(checker, client.client_id, from_b[0])
    assert not works(checker, client.client_id, original)


def test_rotation_racing_a_deletion_does_not_bring_the_client_back(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    a_store = Interleave(open_store())
    a, b = registry(a_store, clock, tmp_path), registry(open_store(), clock, tmp_path)
    client, _ = a.create("svc", ["read"], ["api"])
    a_store.between = lambda: b.delete(client.client_id)
    with pytest.raises(NotFoundError):
        a.rotate_secret(client.client_id, 3600)
    assert open_store().get_client(client.client_id) is None
    assert [e.action for e in open_store().list_audit()] == ["client.delete", "client.create"]


def test_concurrent_secret_rotations_never_hand_out_a_dead_secret(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    """Threads on separate stores: three rotations at once (the most a client keeps: 4 secrets)."""
    creator = registry(open_store(), clock, tmp_path)
    client, _ = creator.create("svc", ["read"], ["api"])
    registries = [registry(open_store(), clock, tmp_path) for _ in range(3)]
    barrier = threading.Barrier(len(registries))
    secrets: list[str] = []
    conflicts: list[ConflictError] = []

    def rotate(reg: ClientRegistry) -> None:
        barrier.wait()
        try:
            secrets.append(reg.rotate_secret(client.client_id, 3600)[1])
        except ConflictError as exc:
            conflicts.append(exc)

    for _ in range(5):
        secrets.clear()
        conflicts.clear()
        threads = [threading.Thread(target=rotate, args=(r,)) for r in registries]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(secrets) + len(conflicts) == len(registries)
        checker = registry(open_store(), clock, tmp_path)
        dead = [s for s in secrets if not works(checker, client.client_id, s)]
        assert not dead, f"{len(dead)} of {len(secrets)} secrets handed out do not authenticate"
        clock.advance(3601)  # the grace of this round's older secrets ends


def test_a_read_that_raced_an_invalidation_is_not_served_afterwards(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    """A record read just before another process deleted the client, and before this process
    dropped its cache for that change, must not be cached for later requests (found in review:
    the deleted client kept getting tokens on this replica until the next store change)."""
    other = registry(open_store(), clock, tmp_path)
    client, _ = other.create("svc", ["read"], ["api"])
    slow = Interleave(open_store())
    here = registry(slow, clock, tmp_path)

    def deleted_meanwhile() -> None:
        other.delete(client.client_id)
        here.invalidate()  # what the background reload does on the change

    slow.between = deleted_meanwhile
    assert here.get(client.client_id) == client  # this request read it before the deletion
    assert here.get(client.client_id) is None  # later ones see the deletion


def test_an_update_racing_a_secret_rotation_keeps_both(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    """PATCH compare-and-sets like a rotation: neither write undoes the other."""
    a_store = Interleave(open_store())
    a, b = registry(a_store, clock, tmp_path), registry(open_store(), clock, tmp_path)
    client, _ = a.create("svc", ["read", "write"], ["api"])
    rotated: list[str] = []
    a_store.between = lambda: rotated.append(b.rotate_secret(client.client_id, 0)[1])
    updated, changes = a.update(client.client_id, scopes=["read"])
    assert changes == {"scopes": {"from": ["read", "write"], "to": ["read"]}}
    stored = open_store().get_client(client.client_id)
    assert stored is not None and stored.scopes == ("read",)
    assert stored.revision == updated.revision
    assert works(registry(open_store(), clock, tmp_path), client.client_id, rotated[0])


def test_an_update_racing_a_deletion_does_not_bring_the_client_back(
    open_store: Callable[[], Store], clock: ManualClock, tmp_path: Path
) -> None:
    a_store = Interleave(open_store())
    a, b = registry(a_store, clock, tmp_path), registry(open_store(), clock, tmp_path)
    client, _ = a.create("svc", ["read"], ["api"])
    a_store.between = lambda: b.delete(client.client_id)
    with pytest.raises(NotFoundError):
        a.update(client.client_id, name="renamed")
    assert open_store().get_client(client.client_id) is None


@pytest.mark.slow
def test_a_scope_taken_away_on_one_replica_is_refused_by_the_other_within_a_second(tmp_path: Path) -> None:
    """Two replicas on one Redis: PATCH on the first; the second refuses the scope within 1 s (its
    cached client record is dropped at the next reload after the store's revision moved)."""
    with Fleet(tmp_path, Policy(rotation_period="1d", prepublish="1h", token_ttl="5m"), replicas=2) as fleet:
        first, second = fleet.replicas
        # The second replica has the client cached, with its admin scope.
        assert fleet.token_response(second, scope="admin", audience=fleet.issuer).status_code == 200
        token = fleet.admin_token(first)
        r = fleet.http.patch(
            first.url(f"/admin/clients/{fleet.client_id}"),
            json={"scopes": ["read", "introspect"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        changed_at = time.monotonic()
        while True:
            refused = fleet.token_response(second, scope="admin", audience=fleet.issuer)
            if refused.status_code == 400:
                break
            assert refused.status_code == 200, refused.text
            assert time.monotonic() - changed_at < 1.0, "the second replica still grants the scope after 1 s"
            time.sleep(0.02)
        assert time.monotonic() - changed_at < 1.0
        assert refused.json()["error"] == "invalid_scope"
        # The admin token issued before the change no longer opens the admin API on either replica.
        for replica in fleet.replicas:
            listed = fleet.http.get(replica.url("/admin/clients"), headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 403, listed.text
        # And the CLI changes it back, in force on both.
        fleet.cli("clients", "update", fleet.client_id, "--scope", "read", "--scope", "admin", "--json")
        time.sleep(1.0)
        for replica in fleet.replicas:
            assert fleet.token_response(replica, scope="admin", audience=fleet.issuer).status_code == 200
