"""Brute-force protection on client authentication (API.md §3): 429 + Retry-After, shared via the store."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest
from redisserver import RedisServer
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service.clients import COUNTERS_RETRY_SECONDS, failure_keys, throttle
from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.model import Client
from jwks_service.runtime import Runtime

GRANT = {"grant_type": "client_credentials"}


def test_ten_failures_per_client_and_address_then_429(http: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    for _ in range(10):
        assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "wrong")).status_code == 401
        clock.advance(1)
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    assert r.status_code == 429
    assert r.json()["error"] == "slow_down"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The same client from another address is not locked out.
    other = TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER, client=("10.9.9.9", 1))
    assert other.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    # The window slides: once the oldest failures are a minute old, the right secret works again.
    clock.advance(int(r.headers["retry-after"]))
    runtime.keys.refresh()
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200


def test_fifty_failures_per_address_across_client_ids(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    for i in range(50):
        form = {**GRANT, "client_id": f"guess-{i}", "client_secret": "x"}
        assert http.post("/oauth/token", data=form).status_code == 401
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    assert r.status_code == 429
    # Introspection and revocation authenticate clients too, and share the counters.
    r = http.post("/oauth/introspect", data={"token": "x"}, headers=basic(client.client_id, secret))
    assert r.status_code == 429


def test_counters_are_shared_by_processes(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> None:
    a, b = runtime_factory(), runtime_factory()
    client, secret = a.clients.create("svc", ["read"], ["api"])
    http_a = TestClient(create_app(runtime=a, background=False), base_url=ISSUER)
    http_b = TestClient(create_app(runtime=b, background=False), base_url=ISSUER)
    for i in range(10):
        http = http_a if i % 2 else http_b
        assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "bad")).status_code == 401
    assert http_a.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429
    assert http_b.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429


def test_throttle_decision_is_pure() -> None:
    keys = failure_keys("c", "1.2.3.4")
    assert throttle({}, keys, 100.0) is None
    assert throttle({keys[0]: (9, 50.0)}, keys, 100.0) is None
    assert throttle({keys[0]: (10, 50.0)}, keys, 100.0) == 11
    assert throttle({keys[1]: (50, 99.5)}, keys, 100.0) == 60
    assert throttle({keys[1]: (49, 99.5)}, keys, 100.0) is None


def test_store_outage_neither_stops_issuance_nor_switches_throttling_off(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    runtime.store.close()  # the store goes away; the client record is cached
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    for _ in range(10):
        assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "bad")).status_code == 401
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429


def test_an_ipv6_host_cannot_dodge_the_throttle_by_changing_address(runtime: Runtime) -> None:
    """One host commonly holds a whole IPv6 /64: the per-address limit counts the /64, so taking a
    new address per guess does not reset it (each guess from another address of the same /64)."""
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    app = create_app(runtime=runtime, background=False)
    for i in range(50):
        guesser = TestClient(app, base_url=ISSUER, client=(f"2001:db8:1:2::{i + 1:x}", 1))
        form = {**GRANT, "client_id": f"guess-{i}", "client_secret": "x"}
        assert guesser.post("/oauth/token", data=form).status_code == 401
    same_host = TestClient(app, base_url=ISSUER, client=("2001:db8:1:2::ffff", 1))
    assert same_host.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 429
    other_host = TestClient(app, base_url=ISSUER, client=("2001:db8:1:3::1", 1))
    assert other_host.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200


def test_a_store_outage_right_after_a_change_still_authenticates_known_clients(
    runtime_factory: Callable[..., Runtime], private_redis: RedisServer, clock: ManualClock
) -> None:
    """Every store change (a key rotation too) drops the client cache. If Redis then freezes, a
    client's record cannot be read again: the record as last read is used, rather than answering
    503 to every client (the fleet harness saw such 503s in CI). A replica that has just started
    knows its clients from its first reload (remember_all)."""
    from jwks_service.clients import CLEAN_CACHE_SECONDS

    assert private_redis.proc is not None
    runtime = runtime_factory(store={"url": private_redis.url})
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    unknown_yet, other_secret = runtime.clients.create("other", ["read"], ["api"])
    http = TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER)
    assert http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).status_code == 200
    fresh = runtime_factory(store={"url": private_redis.url})  # a replica that has just started
    fresh.clients.remember_all()
    fresh_http = TestClient(create_app(runtime=fresh, background=False), base_url=ISSUER)
    runtime.clients.invalidate()  # a rotation elsewhere: the cache is dropped
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        clock.advance(CLEAN_CACHE_SECONDS + COUNTERS_RETRY_SECONDS)
        r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
        assert r.status_code == 200, r.text
        r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "wrong"))
        assert r.status_code == 401  # the record still decides: a wrong secret is refused
        r = http.post("/oauth/token", data=GRANT, headers=basic(unknown_yet.client_id, other_secret))
        assert r.status_code == 503  # never read by this replica: no record to fall back on
        r = fresh_http.post("/oauth/token", data=GRANT, headers=basic(unknown_yet.client_id, other_secret))
        assert r.status_code == 200, r.text
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)


def test_a_starting_replica_reads_every_client_in_pages_and_knows_each_in_an_outage(
    runtime_factory: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_factory()
    made = [runtime.clients.create(f"svc-{i}", ["read"], ["api"]) for i in range(23)]
    fresh = runtime_factory()  # a replica that has just started
    store = fresh.store
    read = store.list_clients_after
    pages: list[tuple[str, int, int]] = []

    def paged(after: str, limit: int) -> list[Client]:
        page = read(after, limit)
        pages.append((after, limit, len(page)))
        return page

    monkeypatch.setattr(store, "list_clients_after", paged)
    monkeypatch.setattr(store, "list_clients", None)  # never the whole list at once
    fresh.clients.remember_all(page=5)
    assert [n for _, _, n in pages] == [5, 5, 5, 5, 3, 0] and all(limit == 5 for _, limit, _ in pages)
    store.close()  # the store goes away before any client was asked for
    for client, secret in made:
        assert asyncio.run(fresh.clients.authenticate_async(client.client_id, secret, "192.0.2.1")) == client


def test_secret_digest_is_hmac_sha256_under_the_pepper(runtime: Runtime) -> None:
    """Stored secret digests are HMAC-SHA256(pepper, secret): a faster way of computing it must give
    the very bytes stored by earlier versions, or every registered client would be locked out."""
    import hmac

    registry = runtime.clients
    for secret in ("G1pfEX10SS2VvP8WjRBcucHpeS6YncaJebYsMv4vMwI", "", "é\udcff", "x" * 300):
        expected = hmac.digest(registry._pepper, secret.encode("utf-8", "surrogateescape"), "sha256")
        assert registry.digest(secret) == expected
        assert registry.digest(secret) == expected  # the keyed state is copied, never consumed
