"""The failure throttle with the background read of failing keys (throttle.FailingKeys): no store read per
token while nobody fails, and the shared throttle as tight as before. On SQLite and on a real Redis.

Each registry here is one replica (its own store connection, one shared store); `failing.refresh()` is
what the scheduler does every second."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from redisserver import RedisServer
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service import scheduler
from jwks_service.clients import ClientRegistry
from jwks_service.clock import ManualClock
from jwks_service.errors import InvalidClientError, TooManyRequestsError
from jwks_service.http import create_app
from jwks_service.model import KeysetPolicy
from jwks_service.runtime import Runtime
from jwks_service.stores import Store
from jwks_service.stores.redis import RedisStore
from jwks_service.stores.sqlite import SQLiteStore
from jwks_service.throttle import (
    FAILING_TRUST_SECONDS,
    MAX_FAILURES_PER_ADDRESS,
    MAX_FAILURES_PER_CLIENT_AND_ADDRESS,
    failure_keys,
)

ADDRESS = "192.0.2.7"
GRANT = {"grant_type": "client_credentials"}


class Counting:
    """A real store, with the calls made through it counted by name."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.after_failing_keys: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            result = attr(*args, **kwargs)
            if name == "failing_keys" and self.after_failing_keys is not None:
                self.after_failing_keys()
            return result

        return counted


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Counting]]:
    """Opens counted connections to one store (each call: another replica's)."""
    opened: list[Store] = []
    redis_url = request.getfixturevalue("private_redis").url if request.param == "redis" else ""

    def make() -> Counting:
        store: Store = RedisStore(redis_url) if redis_url else SQLiteStore(tmp_path / "store.db")
        opened.append(store)
        return Counting(store)

    yield make
    for s in opened:
        s.close()


def replica(store: Counting, clock: ManualClock) -> ClientRegistry:
    return ClientRegistry(cast(Store, store), b"pepper" * 6, clock, {"default": KeysetPolicy("default", "ES256")})


def auth(reg: ClientRegistry, client_id: str, secret: str, address: str = ADDRESS) -> str:
    """ "ok", "401" or "429"."""
    try:
        asyncio.run(reg.authenticate_async(client_id, secret, address))
    except InvalidClientError:
        return "401"
    except TooManyRequestsError:
        return "429"
    return "ok"


def test_distinct_clients_make_no_counter_read_while_the_read_is_fresh_and_nobody_fails(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    store = open_store()
    reg = replica(store, clock)
    clients = [reg.create(f"svc-{i}", ["read"], ["api"]) for i in range(40)]
    reg.failing.refresh()
    assert store.calls["failing_keys"] == 1
    for client, secret in clients:
        assert auth(reg, client.client_id, secret) == "ok"
    assert store.calls["auth_failures"] == 0
    # The same, once the read is too old to trust (the scheduler stopped): one counter read per client.
    clock.advance(FAILING_TRUST_SECONDS)
    for client, secret in clients:
        assert auth(reg, client.client_id, secret) == "ok"
    assert store.calls["auth_failures"] == len(clients)


def test_a_key_with_failures_is_read_from_the_store_and_others_are_not(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    store = open_store()
    reg = replica(store, clock)
    (bad, bad_secret), (good, good_secret) = (reg.create(n, ["read"], ["api"]) for n in ("bad", "good"))
    assert auth(reg, bad.client_id, "wrong", "198.51.100.1") == "401"
    reg.failing.refresh()
    before = store.calls["auth_failures"]
    assert auth(reg, bad.client_id, bad_secret, "198.51.100.1") == "ok"
    assert auth(reg, good.client_id, good_secret, "198.51.100.1") == "ok"  # its address failed
    assert store.calls["auth_failures"] == before + 2
    assert auth(reg, good.client_id, good_secret) == "ok"  # neither key failing
    assert store.calls["auth_failures"] == before + 2


def test_failures_through_one_replica_lock_the_client_out_on_another_within_the_trust_window(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    a, b = replica(open_store(), clock), replica(open_store(), clock)
    client, secret = a.create("svc", ["read"], ["api"])
    a.failing.refresh()
    b.failing.refresh()  # taken before the failures below
    for _ in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS):
        assert auth(a, client.client_id, "wrong") == "401"
    assert auth(a, client.client_id, secret) == "429"
    # B trusts its read for FAILING_TRUST_SECONDS at most: then it reads the counters itself...
    clock.advance(FAILING_TRUST_SECONDS)
    assert auth(b, client.client_id, secret) == "429"
    # ... and any read made after the failures shows them at once.
    b.failing.refresh()
    assert auth(b, client.client_id, secret) == "429"
    assert auth(b, client.client_id, "wrong") == "429"


def test_a_brute_force_is_throttled_as_before_on_one_replica_and_across_two(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    a, b = replica(open_store(), clock), replica(open_store(), clock)
    client, secret = a.create("svc", ["read"], ["api"])
    # One replica, its read fresh and empty when the guessing starts: exactly the limit of wrong guesses.
    a.failing.refresh()
    answers = [auth(a, client.client_id, "wrong") for _ in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS + 5)]
    assert answers == ["401"] * MAX_FAILURES_PER_CLIENT_AND_ADDRESS + ["429"] * 5
    assert auth(a, client.client_id, secret) == "429"
    # Two replicas taking turns, each read refreshed between guesses (a guess a second): the same.
    other = "203.0.113.9"
    answers = []
    for i in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS + 4):
        a.failing.refresh()
        b.failing.refresh()
        answers.append(auth(a if i % 2 else b, client.client_id, "wrong", other))
    assert answers == ["401"] * MAX_FAILURES_PER_CLIENT_AND_ADDRESS + ["429"] * 4
    assert auth(b, client.client_id, secret, other) == "429"
    # Two replicas taking turns within one read (guesses faster than reads): the same.
    third = "203.0.113.10"
    answers = [auth(a if i % 2 else b, client.client_id, "wrong", third) for i in range(12)]
    assert answers == ["401"] * MAX_FAILURES_PER_CLIENT_AND_ADDRESS + ["429"] * 2
    # The per-address limit, across client ids, on one replica with a fresh read.
    fourth = "203.0.113.11"
    a.failing.refresh()
    answers = [auth(a, f"guess-{i}", "x", fourth) for i in range(MAX_FAILURES_PER_ADDRESS + 1)]
    assert answers == ["401"] * MAX_FAILURES_PER_ADDRESS + ["429"]
    assert auth(a, client.client_id, secret, fourth) == "429"


async def _burst(reg: ClientRegistry, client_ids: list[str], address: str = ADDRESS) -> Counter[str]:
    """A wrong guess for each of `client_ids`, all sent at once (concurrent requests on one replica)."""

    async def one(i: int, client_id: str) -> str:
        try:
            await reg.authenticate_async(client_id, f"wrong-{i}", address)
        except InvalidClientError:
            return "401"
        except TooManyRequestsError:
            return "429"
        return "ok"

    return Counter(await asyncio.gather(*(one(i, c) for i, c in enumerate(client_ids))))


def test_a_burst_on_a_replica_whose_read_predates_the_lockout_gets_at_most_one_guess(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    """B's read is fresh but older than A's failures, and B has not cached the client's record (any
    store change drops every replica's cache): the burst waits for that record, and a guess judged
    after it must see the failures made meanwhile. Before, all 40 guesses were checked."""
    a, b = replica(open_store(), clock), replica(open_store(), clock)
    client, _ = a.create("svc", ["read"], ["api"])
    a.failing.refresh()
    b.failing.refresh()
    for _ in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS):
        assert auth(a, client.client_id, "wrong") == "401"
    got = asyncio.run(_burst(b, [client.client_id] * 40))
    assert got["401"] <= 1 and got["401"] + got["429"] == 40, got


def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_limit(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    """Concurrent requests share one read of the counters; each guess is judged with the failures this
    replica saw before it, so a burst cannot outrun the store. Before, 42 of 60 guesses were checked."""
    reg = replica(open_store(), clock)
    client, secret = reg.create("svc", ["read"], ["api"])
    assert auth(reg, client.client_id, secret) == "ok"  # its record cached
    reg.failing.refresh()
    got = asyncio.run(_burst(reg, [client.client_id] * 60))
    assert got == Counter({"401": MAX_FAILURES_PER_CLIENT_AND_ADDRESS, "429": 60 - MAX_FAILURES_PER_CLIENT_AND_ADDRESS})
    # Across client ids from one address: the per-address limit, the same way (the unknown ids read
    # once first, as a cache holds them, so that the burst is not turned away by the gate's cap).
    ids = [f"guess-{i}" for i in range(MAX_FAILURES_PER_ADDRESS + 30)]
    assert all(reg.get(i) is None for i in ids)
    got = asyncio.run(_burst(reg, ids, "198.51.100.77"))
    assert got == Counter({"401": MAX_FAILURES_PER_ADDRESS, "429": 30})


def test_a_failure_recorded_while_a_read_is_under_way_is_not_forgotten_when_it_lands(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    store = open_store()
    reg = replica(store, clock)
    client, secret = reg.create("svc", ["read"], ["api"])
    keys = failure_keys(client.client_id, ADDRESS)

    def fail_meanwhile() -> None:  # the read has been answered; a failure is written before it lands
        store.after_failing_keys = None
        assert auth(reg, client.client_id, "wrong") == "401"

    store.after_failing_keys = fail_meanwhile
    reg.failing.refresh()
    assert not reg.failing.clear(keys, clock.now())
    before = store.calls["auth_failures"]
    assert auth(reg, client.client_id, secret) == "ok"
    assert store.calls["auth_failures"] == before + 1  # read: it has a failure
    reg.failing.refresh()  # a read begun after the write: the store itself names the keys now
    assert not reg.failing.clear(keys, clock.now())


def test_too_many_failing_keys_fall_back_to_a_read_per_request(
    open_store: Callable[[], Counting], clock: ManualClock
) -> None:
    store = open_store()
    reg = replica(store, clock)
    reg.failing.limit = 3
    client, secret = reg.create("svc", ["read"], ["api"])
    for i in range(2):  # four keys failing
        assert auth(reg, "nobody", "x", f"198.51.100.{i}") == "401"
    reg.failing.refresh()
    before = store.calls["auth_failures"]
    assert auth(reg, client.client_id, secret) == "ok"
    assert store.calls["auth_failures"] == before + 1
    assert not reg.failing.clear(failure_keys(client.client_id, "192.0.2.200"), clock.now())


def test_a_store_outage_with_a_fresh_read_still_issues_and_still_throttles(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    runtime.clients.failing.refresh()
    runtime.store.close()  # the store goes away; the client record is cached, the read still fresh
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    for _ in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS):
        assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "bad")).status_code == 401
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429


def test_replicas_share_the_throttle_over_http_with_their_reads_fresh(
    runtime_factory: Callable[..., Runtime], private_redis: RedisServer
) -> None:
    a, b = runtime_factory(store={"url": private_redis.url}), runtime_factory(store={"url": private_redis.url})
    client, secret = a.clients.create("svc", ["read"], ["api"])
    http_a = TestClient(create_app(runtime=a, background=False), base_url=ISSUER)
    http_b = TestClient(create_app(runtime=b, background=False), base_url=ISSUER)
    for i in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS):
        a.clients.failing.refresh()
        b.clients.failing.refresh()
        http = http_a if i % 2 else http_b
        assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "bad")).status_code == 401
    a.clients.failing.refresh()
    b.clients.failing.refresh()
    assert http_a.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429
    assert http_b.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429


def test_the_background_work_reads_the_failing_keys(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = runtime.clients.failing
    read = threading.Event()
    refresh = failing.refresh

    def refreshed() -> None:
        refresh()
        read.set()

    monkeypatch.setattr(failing, "refresh", refreshed)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run, runtime, lambda: None)
            assert await anyio.to_thread.run_sync(read.wait, 10)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert failing.clear(failure_keys("c", ADDRESS), failing.taken_at)


def test_a_replica_follows_store_changes_while_it_loads_its_clients(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading every client's record (seconds with 100,000 of them) runs beside the background refresh,
    not before it: the refresh (keys, revocations, the client cache dropped on a change) goes on while
    the load is still under way. Before, it began only once every client was read."""
    loading = threading.Event()
    release = threading.Event()
    refreshed = threading.Event()

    def slow_remember_all(page: int = 500) -> None:
        loading.set()
        release.wait(10)

    monkeypatch.setattr(runtime.clients, "remember_all", slow_remember_all)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run, runtime, refreshed.set)
            assert await anyio.to_thread.run_sync(loading.wait, 10)
            assert await anyio.to_thread.run_sync(refreshed.wait, 10), "no refresh while the clients loaded"
            assert not release.is_set()
            release.set()
            tg.cancel_scope.cancel()

    anyio.run(main)
